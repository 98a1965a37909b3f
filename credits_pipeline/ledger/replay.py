"""The per-user ledger replay of contract section 2, compiled with numba.

Three rules (`chain_break`, `overdraft_writeoff`, `balance_drift`) and the reconciliation columns
(ledger pools, forfeited and written-off credits) depend on walking every user's rows in write
order, carrying two pools from row to row. That is inherently sequential, so it cannot be a
set-based
SQL query, and a Python loop over millions of rows is far too slow: the walk is one numba-compiled
pass over flat numpy arrays sorted by (user_id, id). The same pass also compares each row's
`created_at` with the user's previous row (the sequential half of `timestamp_order`), because it
already visits the rows in exactly that order. Nothing here knows about DuckDB or Dagster.

The walk can also *resume*: given each user's state after the rows already replayed
(`ReplayState`: both pools, counters, the last id and its `created_at`), it replays only the newer
rows and ends exactly where a replay of the whole history would. That is what makes a daily
reconciliation cost one day of rows instead of the whole ledger (`ledger/replay_state.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import types

# Explicit signatures: compiled (or loaded from the on-disk cache) at import, not inside a run.
_I64 = types.int64[::1]
_I8 = types.int8[::1]

# Effect codes of a row (contract section 2 and 5). SKIP: unknown event with event_type not 1/2.
EFFECT_SKIP = 0
EFFECT_RESET = 1
EFFECT_ADD = 2
EFFECT_PURCHASE = 3
EFFECT_SPEND = 4
EFFECT_CODES: dict[str, int] = {
    "reset": EFFECT_RESET,
    "add": EFFECT_ADD,
    "purchase": EFFECT_PURCHASE,
    "spend": EFFECT_SPEND,
}

# Sentinels for NULL in int64 arrays (the source's amounts are unsigned, epoch seconds are far
# from these values).
NULL_INT = np.iinfo(np.int64).min

# Bits of `ReplayResult.flags`.
FLAG_CHAIN_BREAK = 1
FLAG_OVERDRAFT = 2
FLAG_BEFORE_PREVIOUS = 4


@dataclass(frozen=True)
class ReplayState:
    """Every user's replay state after the rows replayed so far, one entry per user by user_id.

    `last_id` is the user's last replayed row (a resumed replay accepts only rows above it),
    `last_created_s` that row's created_at (epoch s, NULL_INT when NULL: `timestamp_order` compares
    the next row with it), `rows` how many rows were replayed. Arrays are int64, `user_id` strictly
    ascending. Why arrays and not a dict: a state covers millions of users and is read and written
    as one Arrow table.
    """

    user_id: np.ndarray
    subscription: np.ndarray
    purchased: np.ndarray
    chain_breaks: np.ndarray
    first_break_id: np.ndarray
    forfeited: np.ndarray
    written_off: np.ndarray
    last_id: np.ndarray
    last_created_s: np.ndarray
    rows: np.ndarray

    FIELDS = (
        "user_id",
        "subscription",
        "purchased",
        "chain_breaks",
        "first_break_id",
        "forfeited",
        "written_off",
        "last_id",
        "last_created_s",
        "rows",
    )

    @classmethod
    def empty(cls) -> ReplayState:
        return cls(**{f: np.zeros(0, dtype=np.int64) for f in cls.FIELDS})

    @classmethod
    def from_columns(cls, columns: dict[str, np.ndarray]) -> ReplayState:
        """A state from columns in any user order (e.g. read back from the warehouse)."""
        arrays = {f: np.ascontiguousarray(columns[f], dtype=np.int64) for f in cls.FIELDS}
        order = np.argsort(arrays["user_id"], kind="stable")
        arrays = {f: a[order] for f, a in arrays.items()}
        if len(order) > 1 and not np.all(np.diff(arrays["user_id"]) > 0):
            raise ValueError("a replay state holds each user once")
        return cls(**arrays)

    def columns(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in self.FIELDS}

    def __len__(self) -> int:
        return len(self.user_id)

    def without(self, user_ids: np.ndarray) -> ReplayState:
        """The state minus some users: they will be replayed again from their first row."""
        keep = ~np.isin(self.user_id, np.asarray(user_ids, dtype=np.int64))
        return ReplayState(**{f: a[keep] for f, a in self.columns().items()})

    def advanced(self, newer: ReplayState) -> ReplayState:
        """This state updated by a replay of newer rows: users in `newer` take its entries."""
        keep = ~np.isin(self.user_id, newer.user_id)
        merged = {
            f: np.concatenate([a[keep], getattr(newer, f)]) for f, a in self.columns().items()
        }
        return ReplayState.from_columns(merged)


@dataclass(frozen=True)
class RowPools:
    """Both pools around every replayed row, aligned with the input rows: the one replay's
    per-row outcome, which the marts read (as `credits.ledger_row_pools`) instead of replaying the
    ledger a second time.

    `row_number` is the row's position in its user's ledger (1 = first, counted on from a resumed
    state); `subscription_before` the subscription pool a reset, add or spend row continues from
    (its recorded previous_amount, or what the replay expected when that is NULL; NULL_INT for
    purchase and skipped rows); `purchased_before` the purchased pool before the row; `*_after`
    both pools after it; `forfeited` what a reset forfeits, `written_off` what an overdraft
    spend writes off (0 otherwise). Their sums per user are the state's counters exactly.
    """

    row_number: np.ndarray
    subscription_before: np.ndarray
    purchased_before: np.ndarray
    subscription_after: np.ndarray
    purchased_after: np.ndarray
    forfeited: np.ndarray
    written_off: np.ndarray

    FIELDS = (
        "row_number",
        "subscription_before",
        "purchased_before",
        "subscription_after",
        "purchased_after",
        "forfeited",
        "written_off",
    )


@dataclass(frozen=True)
class ReplayResult:
    """What the replay found, as numpy arrays.

    Row arrays are aligned with the input rows; only flagged rows carry meaning
    in `expected_previous` (chain_break: the pool the replay expected), `available` (overdraft: both
    pools before the spend) and `previous_created_s` (the previous row's created_at, epoch s).
    `state` holds one entry per distinct `user_id` of these rows, in ascending order: each user's
    pools and counters after its last row, where a later replay resumes. `pools` holds both pools
    around every row (`RowPools`).
    """

    flags: np.ndarray
    expected_previous: np.ndarray
    available: np.ndarray
    previous_created_s: np.ndarray
    state: ReplayState
    pools: RowPools


@numba.njit(
    (
        _I64,
        _I64,
        _I64,
        _I8,
        _I64,
        _I64,
        _I64,
        _I64,
        _I64,
        _I64,
        _I64,
        _I64,
        _I64,
        _I64,
        _I64,
        _I64,
        _I64,
    ),
    cache=True,
    nogil=True,
)
def _replay_kernel(
    order,
    user_id,
    row_id,
    effect,
    amount,
    previous,
    created_s,
    s_user,
    s_sub,
    s_pur,
    s_breaks,
    s_first,
    s_forfeit,
    s_writeoff,
    s_last_id,
    s_last_created,
    s_rows,
):  # pragma: no cover
    n = user_id.shape[0]
    m = s_user.shape[0]
    flags = np.zeros(n, dtype=np.uint8)
    expected_previous = np.zeros(n, dtype=np.int64)
    available = np.zeros(n, dtype=np.int64)
    previous_created_s = np.zeros(n, dtype=np.int64)
    # the pools around every row (contract section 2), published as credits.ledger_row_pools
    r_row_number = np.zeros(n, dtype=np.int64)
    r_sub_before = np.full(n, NULL_INT, dtype=np.int64)
    r_pur_before = np.zeros(n, dtype=np.int64)
    r_sub_after = np.zeros(n, dtype=np.int64)
    r_pur_after = np.zeros(n, dtype=np.int64)
    r_forfeit = np.zeros(n, dtype=np.int64)
    r_writeoff = np.zeros(n, dtype=np.int64)

    n_users = 0
    for j in range(n):
        if j == 0 or user_id[order[j]] != user_id[order[j - 1]]:
            n_users += 1
    u_id = np.empty(n_users, dtype=np.int64)
    u_sub = np.zeros(n_users, dtype=np.int64)
    u_pur = np.zeros(n_users, dtype=np.int64)
    u_breaks = np.zeros(n_users, dtype=np.int64)
    u_first = np.full(n_users, NULL_INT, dtype=np.int64)
    u_forfeit = np.zeros(n_users, dtype=np.int64)
    u_writeoff = np.zeros(n_users, dtype=np.int64)
    u_last_id = np.zeros(n_users, dtype=np.int64)
    u_last_created = np.full(n_users, NULL_INT, dtype=np.int64)
    u_rows = np.zeros(n_users, dtype=np.int64)

    u = -1
    sub = 0
    pur = 0
    last_created = NULL_INT
    for j in range(n):
        i = order[j]
        if j > 0:
            h = order[j - 1]
            if user_id[i] < user_id[h] or (user_id[i] == user_id[h] and row_id[i] <= row_id[h]):
                raise ValueError("replay needs an order by (user_id, id) over unique ids")
        if j == 0 or user_id[i] != user_id[order[j - 1]]:
            if u >= 0:
                u_sub[u] = sub
                u_pur[u] = pur
            u += 1
            u_id[u] = user_id[i]
            sub = 0
            pur = 0
            last_created = NULL_INT
            k = np.searchsorted(s_user, user_id[i])
            if k < m and s_user[k] == user_id[i]:
                # resume where the previous replay of this user ended
                if row_id[i] <= s_last_id[k]:
                    raise ValueError("a resumed replay takes only rows above each user's last id")
                sub = s_sub[k]
                pur = s_pur[k]
                last_created = s_last_created[k]
                u_breaks[u] = s_breaks[k]
                u_first[u] = s_first[k]
                u_forfeit[u] = s_forfeit[k]
                u_writeoff[u] = s_writeoff[k]
                u_rows[u] = s_rows[k]
        u_last_id[u] = row_id[i]
        u_rows[u] += 1
        r_row_number[i] = u_rows[u]
        r_pur_before[i] = pur

        # timestamp_order, sequential half: the user's previous row by id, both non-NULL.
        c = created_s[i]
        if c != NULL_INT and last_created != NULL_INT and c < last_created:
            flags[i] |= FLAG_BEFORE_PREVIOUS
            previous_created_s[i] = last_created
        last_created = c
        u_last_created[u] = c

        e = effect[i]
        if e == EFFECT_SKIP:
            r_sub_after[i] = sub
            r_pur_after[i] = pur
            continue
        a = amount[i]
        p = previous[i]
        if e == EFFECT_PURCHASE:
            # previous_amount records the purchased pool after the purchase.
            expected = pur + a
            if p != expected:
                flags[i] |= FLAG_CHAIN_BREAK
                expected_previous[i] = expected
                u_breaks[u] += 1
                if u_first[u] == NULL_INT:
                    u_first[u] = row_id[i]
            pur = expected if p == NULL_INT else p
            r_sub_after[i] = sub
            r_pur_after[i] = pur
            continue

        # reset, add, spend: previous_amount records the subscription pool before.
        if p != sub:
            flags[i] |= FLAG_CHAIN_BREAK
            expected_previous[i] = sub
            u_breaks[u] += 1
            if u_first[u] == NULL_INT:
                u_first[u] = row_id[i]
        if p != NULL_INT:
            sub = p  # continue from what the row recorded
        r_sub_before[i] = sub
        if e == EFFECT_RESET:
            u_forfeit[u] += sub
            r_forfeit[i] = sub
            sub = a
        elif e == EFFECT_ADD:
            sub += a
        else:
            if sub >= a:
                sub -= a
            elif pur >= a:
                pur -= a
            else:
                both = sub + pur
                if a > both:
                    flags[i] |= FLAG_OVERDRAFT
                    available[i] = both
                    u_writeoff[u] += a - both
                    r_writeoff[i] = a - both
                rest = pur - (a - sub)
                pur = rest if rest > 0 else 0
                sub = 0
        r_sub_after[i] = sub
        r_pur_after[i] = pur
    if u >= 0:
        u_sub[u] = sub
        u_pur[u] = pur
    return (
        flags,
        expected_previous,
        available,
        previous_created_s,
        u_id,
        u_sub,
        u_pur,
        u_breaks,
        u_first,
        u_forfeit,
        u_writeoff,
        u_last_id,
        u_last_created,
        u_rows,
        r_row_number,
        r_sub_before,
        r_pur_before,
        r_sub_after,
        r_pur_after,
        r_forfeit,
        r_writeoff,
    )


@numba.njit((_I64, _I64), cache=True, nogil=True)
def _user_then_id_order(user_id, row_id):  # pragma: no cover - jit
    """A stable counting sort by user, then each user's rows by id: O(n) for dense user ids."""
    n = user_id.shape[0]
    if n == 0:
        return True, np.arange(0)
    lo = user_id[0]
    hi = user_id[0]
    for i in range(n):
        if user_id[i] < lo:
            lo = user_id[i]
        if user_id[i] > hi:
            hi = user_id[i]
    span = hi - lo + 1
    if span > 4 * n + 1_000_000:
        return False, np.arange(0)
    offsets = np.zeros(span + 1, dtype=np.int64)
    for i in range(n):
        offsets[user_id[i] - lo + 1] += 1
    for k in range(span):
        offsets[k + 1] += offsets[k]
    starts = offsets.copy()
    order = np.empty(n, dtype=np.int64)
    for i in range(n):
        k = user_id[i] - lo
        order[offsets[k]] = i
        offsets[k] += 1
    # Within a user the scan order is usually id order already (an append-only ledger).
    for k in range(span):
        a = starts[k]
        b = starts[k + 1]
        ordered = True
        for j in range(a + 1, b):
            if row_id[order[j]] < row_id[order[j - 1]]:
                ordered = False
                break
        if not ordered:
            group = order[a:b].copy()
            ids = np.empty(b - a, dtype=np.int64)
            for j in range(b - a):
                ids[j] = row_id[group[j]]
            perm = np.argsort(ids, kind="mergesort")
            for j in range(b - a):
                order[a + j] = group[perm[j]]
    return True, order


def sort_order(user_id: np.ndarray, row_id: np.ndarray) -> np.ndarray:
    """The permutation that sorts rows by (user_id, id).

    Why not np.lexsort: user ids are auto-increment keys, so a counting sort by user is linear, and
    each user's rows usually come in id order already (an append-only ledger); lexsort is kept as
    the fallback for sparse user ids.
    """
    uid = np.ascontiguousarray(user_id, dtype=np.int64)
    rid = np.ascontiguousarray(row_id, dtype=np.int64)
    ok, order = _user_then_id_order(uid, rid)
    if not ok:
        order = np.lexsort((rid, uid))
    return order


@numba.njit((_I64, _I64, _I64, _I8), cache=True, nogil=True)
def _resolve_effects(credit_events_id, event_type, event_ids, event_effects):  # pragma: no cover
    n = credit_events_id.shape[0]
    out = np.empty(n, dtype=np.int8)
    m = event_ids.shape[0]
    for i in range(n):
        k = np.searchsorted(event_ids, credit_events_id[i])
        if k < m and event_ids[k] == credit_events_id[i] and event_effects[k] != EFFECT_SKIP:
            out[i] = event_effects[k]
        elif event_type[i] == 1:
            out[i] = EFFECT_ADD
        elif event_type[i] == 2:
            out[i] = EFFECT_SPEND
        else:
            out[i] = EFFECT_SKIP
    return out


def resolve_effects(
    credit_events_id: np.ndarray,
    event_type: np.ndarray,
    event_ids: np.ndarray,
    event_effects: np.ndarray,
) -> np.ndarray:
    """Each row's EFFECT_* code: its event's catalog effect, else its own event_type (1/2), else
    skip.

    `event_ids`/`event_effects` describe the `credit_events` rows (effect EFFECT_SKIP for an event
    whose name is not in the catalog). Why here and not in SQL: a join per row of a 5M-row scan
    costs more than the whole replay; a binary search over ~20 events costs nothing.
    """
    ids = np.asarray(event_ids, dtype=np.int64)
    effects = np.asarray(event_effects, dtype=np.int8)
    order = np.argsort(ids, kind="stable")
    return _resolve_effects(
        np.ascontiguousarray(credit_events_id, dtype=np.int64),
        np.ascontiguousarray(event_type, dtype=np.int64),
        ids[order],
        effects[order],
    )


def replay(
    user_id: np.ndarray,
    row_id: np.ndarray,
    effect: np.ndarray,
    amount: np.ndarray,
    previous: np.ndarray,
    created_s: np.ndarray | None = None,
    order: np.ndarray | None = None,
    start: ReplayState | None = None,
) -> ReplayResult:
    """Replay a ledger given as flat arrays, in any row order.

    `effect` holds the EFFECT_* codes (see `resolve_effects`); `previous` and `created_s` use
    NULL_INT for NULL (a NULL previous_amount is a chain break and the replay continues from what it
    expected). `order` is the (user_id, id) sort permutation (`sort_order`), computed when not
    given; row outputs are aligned with the input rows, not with `order`. Why arrays: the caller
    fetches them straight from DuckDB (`fetchnumpy`), with no Python object per row.

    `start` resumes: a user found in it continues from its pools, counters and last row (its rows
    here must all have larger ids, or ValueError), a user not in it starts from zero. The user
    state of the result covers only the users in these rows; `start.advanced(result.state)` is the
    state after them.
    """
    n = len(user_id)
    if created_s is None:
        created_s = np.full(n, NULL_INT, dtype=np.int64)
    uid = np.ascontiguousarray(user_id, dtype=np.int64)
    rid = np.ascontiguousarray(row_id, dtype=np.int64)
    if order is None:
        order = sort_order(uid, rid)
    order = np.ascontiguousarray(order, dtype=np.int64)
    if start is None:
        start = ReplayState.empty()
    flags, expected_previous, available, previous_created_s, *rest = _replay_kernel(
        order,
        uid,
        rid,
        np.ascontiguousarray(effect, dtype=np.int8),
        np.ascontiguousarray(amount, dtype=np.int64),
        np.ascontiguousarray(previous, dtype=np.int64),
        np.ascontiguousarray(created_s, dtype=np.int64),
        *(np.ascontiguousarray(a, dtype=np.int64) for a in start.columns().values()),
    )
    users, pools = rest[: len(ReplayState.FIELDS)], rest[len(ReplayState.FIELDS) :]
    return ReplayResult(
        flags,
        expected_previous,
        available,
        previous_created_s,
        ReplayState(*users),
        RowPools(*pools),
    )
