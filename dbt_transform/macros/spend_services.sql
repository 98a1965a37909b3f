{#- The catalog's spend services (contract section 1), one `spent_<service>` column each. -#}
{% macro spend_services() -%}
    {{ return(['faceless_video', 'real_clone', 'voice_synthesis', 'captions', 'video_render',
               'assets', 'ai_writing', 'ideas']) }}
{%- endmacro %}
