/*
 * tidemark_nif: the BEAM binding of include/tidemark.h (Elixir module Tidemark.Native).
 *
 * Resources (each destructor calls the matching `_free`):
 *
 *   tracker_res  a `tidemark_tracker*`, the writer table, the subscriber, the owner monitor.
 *   writer_res   one per registered writer: {tracker (kept), writer id, down class} and the
 *                process monitor on the writer's pid. The tracker's table keeps it alive while
 *                the writer is registered and its process is alive, so the monitor survives
 *                even when no Elixir term refers to it (the host only holds the integer id).
 *   buffer_res   a `tidemark_batch_buffer*`, its subscribed sink (the pid notified when a batch
 *                is due) and the processes watching an asynchronous stop.
 *   batch_res    a `tidemark_batch*` taken by poll_batch until ack/nack (freed if dropped:
 *                the batch then stays in flight and is handed back by the stop).
 *
 * Ownership cycle and how it is broken: tracker --table--> writer --keep--> tracker. The cycle
 * ends for one writer when its process dies (down callback), when the host unregisters it, or
 * for all of them when the tracker is closed (`close/1`, or its owner process exits: the
 * tracker monitors the process that created it, like an ETS table). After that, the tracker
 * resource is freed by the garbage collector like any resource.
 *
 * Scheduler safety: every call below is O(1) or O(small argument) except the ones registered
 * as dirty (sweep, stop, flush with a timeout, close) and those that reschedule themselves onto
 * a dirty CPU scheduler: commit / flushed_many / push_many past DIRTY_ITEMS items, batches past
 * DIRTY_BATCH_*, stop reports sent by poll_stop_send past DIRTY_ITEMS handed-back messages,
 * tracker_new with more than DIRTY_EXPECTED_WRITERS expected writers, and a register whose
 * registration needs the library to allocate writer slots: register first calls
 * `tidemark_tracker_register_if_allocated` (O(1), never allocates) on the normal scheduler and
 * only on WOULD_BLOCK moves to a dirty CPU scheduler for the allocating
 * `tidemark_tracker_register` (see register_impl).
 *
 * Bounded work: the library examines at most `call_budget` deliveries per call (pop, judge or
 * compact) and leaves the rest as a backlog that later calls continue. Every tracker NIF that
 * can run the log (commit, flushed, flushed_many, remove, down, unregister, touch, pause,
 * resume, take_events, sweep) asks `tidemark_tracker_has_backlog` afterwards; when work is
 * left it reschedules itself (enif_schedule_nif, argv = [tracker, result, events]) onto a
 * dirty CPU scheduler that runs `tidemark_tracker_run_backlog` step by step until none is
 * left, then publishes and returns the call's result (see finish_call). So the normal-scheduler
 * part of a call is one library call: one budget, two for the calls that end the head's stint
 * and then help the backlog that left (remove, down, unregister). flushed_many applies reports
 * on the normal scheduler only while the log work they caused stays below one budget (under
 * two in all) and no backlog is left; the rest of the list goes to the dirty scheduler. A
 * monitor's down callback cannot reschedule: it hands a backlog to a short-lived native thread
 * (one per tracker at a time, see start_background).
 *
 * Sink notification (buffer_subscribe, buffer_poll_batch_notify): the library calls
 * `buffer_notify(ctx = buffer_res)` once per arming, on the thread of the call that made a
 * batch due, after its locks are released. That thread is always inside one of this file's
 * NIFs on that buffer (push, push_many, ack/nack, flush, stop, begin_stop, poll_stop, polls):
 * each sets the thread-local `tls_env` to its own env around the library call (BUFFER_CALL),
 * so the callback passes the caller's env to enif_send as a scheduler thread must (normal or
 * dirty). A callback on a thread that is not an ERTS thread (enif_thread_type() ==
 * ERL_NIF_THR_UNDEFINED) sends with a NULL env, as such a thread must; one on an ERTS thread
 * with no env set (no such path exists today) is handed to a short-lived native thread that
 * sends with a NULL env. The buffer destructor removes the callback before freeing the buffer
 * (whose free stops it, which would notify), so `ctx` outlives every call.
 *
 * Locks: `buffer_res.lock` guards the subscriber and the stop watchers, is never held across
 * a tidemark call (the callback takes it), and is held only to copy a pid or the watcher list.
 * `tracker_res.lock` guards only the writer table and the closed flag (never held across
 * a tidemark call); `tracker_res.pub_lock` serialises sending ack/event messages to the
 * subscriber (held across `take_events` and `enif_send` only, both short), so the subscriber
 * sees ack values in increasing order. Flush reports take neither unless the ack moved.
 */

#include <erl_nif.h>
#include <tidemark.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Lists longer than this are processed on a dirty CPU scheduler (about 100 ns per item). */
#define DIRTY_ITEMS 1000
/* Batches above these sizes are converted to terms on a dirty CPU scheduler. */
#define DIRTY_BATCH_MESSAGES 4096
#define DIRTY_BATCH_BYTES (512u * 1024u)
/* Backlog steps one dirty continuation runs before rescheduling itself (each step examines at
 * most one call budget: about 1024 deliveries by default). */
#define BACKLOG_STEPS 64
/* A step that finds another thread holding the drain token makes no progress; after this many
 * in a row the continuation stops waiting (that holder continues, or leaves a backlog that the
 * next call picks up). */
#define BACKLOG_STUCK 1000
/* Events taken per `take_events` crossing. */
#define EVENT_PAGE 64
/* tracker_new with more expected writers than this allocates its slots on a dirty CPU
 * scheduler (O(argument) work, like a long list). */
#define DIRTY_EXPECTED_WRITERS 8192
/* This binding's own writer table (indexed by the slot index of the id, see table_slot):
 * segment k holds 64 << k entries; 27 segments cover every u32 slot index. Nothing here
 * describes the library's table, whose layout is private to it. */
#define TABLE_SEG0_BITS 6
#define TABLE_SEGS 27

/* ------------------------------------------------------------------------------------------ */
/* Atoms                                                                                       */

static ERL_NIF_TERM a_ok, a_error, a_nil, a_true, a_false, a_infinity, a_would_block;
static ERL_NIF_TERM a_tidemark_ack, a_tidemark_event;
static ERL_NIF_TERM a_tidemark_evicted, a_tidemark_challenge, a_tidemark_removed;
static ERL_NIF_TERM a_challenge, a_challenged, a_evicted, a_removed;
static ERL_NIF_TERM a_legacy, a_unified;
static ERL_NIF_TERM a_none, a_crashed, a_orphaned, a_stalled;
static ERL_NIF_TERM a_crash, a_cleanup, a_teardown;
static ERL_NIF_TERM a_idle, a_pending;
static ERL_NIF_TERM a_count, a_bytes, a_linger, a_flush, a_stop;
static ERL_NIF_TERM a_unknown_status, a_enomem;
static ERL_NIF_TERM a_tidemark_batch_ready, a_tidemark_stopped, a_tidemark_stop_progress;
static ERL_NIF_TERM a_no_subscriber;
static ERL_NIF_TERM status_atoms[TIDEMARK_STATUS_OUT_OF_MEMORY + 1];

static ERL_NIF_TERM atom(ErlNifEnv *env, const char *name) {
    ERL_NIF_TERM a;
    if (enif_make_existing_atom(env, name, &a, ERL_NIF_LATIN1))
        return a;
    return enif_make_atom(env, name);
}

static void init_atoms(ErlNifEnv *env) {
    a_ok = atom(env, "ok");
    a_error = atom(env, "error");
    a_nil = atom(env, "nil");
    a_true = atom(env, "true");
    a_false = atom(env, "false");
    a_infinity = atom(env, "infinity");
    a_would_block = atom(env, "would_block");
    a_tidemark_ack = atom(env, "tidemark_ack");
    a_tidemark_event = atom(env, "tidemark_event");
    a_tidemark_evicted = atom(env, "tidemark_evicted");
    a_tidemark_challenge = atom(env, "tidemark_challenge");
    a_tidemark_removed = atom(env, "tidemark_removed");
    a_challenge = atom(env, "challenge");
    a_challenged = atom(env, "challenged");
    a_legacy = atom(env, "legacy");
    a_unified = atom(env, "unified");
    a_evicted = atom(env, "evicted");
    a_removed = atom(env, "removed");
    a_none = atom(env, "none");
    a_crashed = atom(env, "crashed");
    a_orphaned = atom(env, "orphaned");
    a_stalled = atom(env, "stalled");
    a_crash = atom(env, "crash");
    a_cleanup = atom(env, "cleanup");
    a_teardown = atom(env, "teardown");
    a_idle = atom(env, "idle");
    a_pending = atom(env, "pending");
    a_count = atom(env, "count");
    a_bytes = atom(env, "bytes");
    a_linger = atom(env, "linger");
    a_flush = atom(env, "flush");
    a_stop = atom(env, "stop");
    a_unknown_status = atom(env, "unknown_status");
    a_enomem = atom(env, "enomem");
    a_tidemark_batch_ready = atom(env, "tidemark_batch_ready");
    a_tidemark_stopped = atom(env, "tidemark_stopped");
    a_tidemark_stop_progress = atom(env, "tidemark_stop_progress");
    a_no_subscriber = atom(env, "no_subscriber");
    static const char *const names[] = {
        "ok",          "null_argument", "invalid_argument", "offset_regressed",
        "unknown_writer", "evicted_writer", "capacity",      "full",
        "stopping",    "closed",        "timeout",          "would_block",
        "buffer_too_small", "panic",    "too_large",        "not_in_flight",
        "link_failed", "empty",         "invalid_handle",   "out_of_memory",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        status_atoms[i] = atom(env, names[i]);
}

static ERL_NIF_TERM status_atom(tidemark_status s) {
    return s <= TIDEMARK_STATUS_OUT_OF_MEMORY ? status_atoms[s] : a_unknown_status;
}

/* :ok, or {:error, status} */
static ERL_NIF_TERM ok_or_error(ErlNifEnv *env, tidemark_status s) {
    if (s == TIDEMARK_STATUS_OK)
        return a_ok;
    return enif_make_tuple2(env, a_error, status_atom(s));
}

static ERL_NIF_TERM error_tuple(ErlNifEnv *env, ERL_NIF_TERM reason) {
    return enif_make_tuple2(env, a_error, reason);
}

static ERL_NIF_TERM ok_tuple(ErlNifEnv *env, ERL_NIF_TERM value) {
    return enif_make_tuple2(env, a_ok, value);
}

static ERL_NIF_TERM make_bool(bool b) { return b ? a_true : a_false; }

static ERL_NIF_TERM make_offset(ErlNifEnv *env, tidemark_offset o) {
    return enif_make_tuple2(env, enif_make_uint64(env, o.tx), enif_make_uint64(env, o.op));
}

static int get_u64(ErlNifEnv *env, ERL_NIF_TERM t, uint64_t *out) {
    ErlNifUInt64 v;
    if (!enif_get_uint64(env, t, &v))
        return 0;
    *out = (uint64_t)v;
    return 1;
}

/* nil -> keep *out; non-negative integer -> *out */
static int get_opt_u64(ErlNifEnv *env, ERL_NIF_TERM t, uint64_t *out, bool *set) {
    if (enif_is_identical(t, a_nil)) {
        if (set)
            *set = false;
        return 1;
    }
    if (set)
        *set = true;
    return get_u64(env, t, out);
}

static int get_opt_size(ErlNifEnv *env, ERL_NIF_TERM t, size_t *out) {
    uint64_t v = *out;
    if (!get_opt_u64(env, t, &v, NULL))
        return 0;
    *out = (size_t)v;
    return 1;
}

/* {tx, op} with both non-negative 64-bit integers */
static int get_offset(ErlNifEnv *env, ERL_NIF_TERM t, tidemark_offset *o) {
    int arity;
    const ERL_NIF_TERM *el;
    if (!enif_get_tuple(env, t, &arity, &el) || arity != 2)
        return 0;
    return get_u64(env, el[0], &o->tx) && get_u64(env, el[1], &o->op);
}

static int get_class(ERL_NIF_TERM t, uint32_t *class_) {
    if (enif_is_identical(t, a_crash))
        *class_ = TIDEMARK_DOWN_CLASS_CRASH;
    else if (enif_is_identical(t, a_cleanup))
        *class_ = TIDEMARK_DOWN_CLASS_CLEANUP;
    else if (enif_is_identical(t, a_teardown))
        *class_ = TIDEMARK_DOWN_CLASS_TEARDOWN;
    else
        return 0;
    return 1;
}

static ERL_NIF_TERM reason_atom(tidemark_evict_reason r) {
    switch (r) {
    case TIDEMARK_EVICT_REASON_CRASHED: return a_crashed;
    case TIDEMARK_EVICT_REASON_ORPHANED: return a_orphaned;
    case TIDEMARK_EVICT_REASON_STALLED: return a_stalled;
    default: return a_none;
    }
}

/* An event as take_events returns it. Unified (`events: :unified`): {:challenged, w} |
 * {:evicted, w, reason} | {:removed, w}, the same term the message carries. Legacy (the
 * default, the shape since the first release): {:challenge, w} for a challenge, the rest
 * alike. */
static ERL_NIF_TERM event_term(ErlNifEnv *env, const tidemark_event *e, bool unified) {
    ERL_NIF_TERM w = enif_make_uint64(env, e->writer);
    switch (e->kind) {
    case TIDEMARK_EVENT_KIND_CHALLENGED:
        return enif_make_tuple2(env, unified ? a_challenged : a_challenge, w);
    case TIDEMARK_EVENT_KIND_EVICTED:
        return enif_make_tuple3(env, a_evicted, w, reason_atom(e->reason));
    default: return enif_make_tuple2(env, a_removed, w);
    }
}

/* An event as a subscriber message. Unified: {:tidemark_event, t, event_term}. Legacy (the
 * default): {:tidemark_evicted, t, w, reason} | {:tidemark_challenge, t, w} |
 * {:tidemark_removed, t, w}. */
static ERL_NIF_TERM event_message(ErlNifEnv *env, ERL_NIF_TERM tterm, const tidemark_event *e,
                                  bool unified) {
    if (unified)
        return enif_make_tuple3(env, a_tidemark_event, tterm, event_term(env, e, true));
    ERL_NIF_TERM w = enif_make_uint64(env, e->writer);
    switch (e->kind) {
    case TIDEMARK_EVENT_KIND_CHALLENGED:
        return enif_make_tuple3(env, a_tidemark_challenge, tterm, w);
    case TIDEMARK_EVENT_KIND_EVICTED:
        return enif_make_tuple4(env, a_tidemark_evicted, tterm, w, reason_atom(e->reason));
    default: return enif_make_tuple3(env, a_tidemark_removed, tterm, w);
    }
}

static ERL_NIF_TERM trigger_atom(tidemark_trigger t) {
    switch (t) {
    case TIDEMARK_TRIGGER_COUNT: return a_count;
    case TIDEMARK_TRIGGER_BYTES: return a_bytes;
    case TIDEMARK_TRIGGER_LINGER: return a_linger;
    case TIDEMARK_TRIGGER_FLUSH: return a_flush;
    default: return a_stop;
    }
}

static ERL_NIF_TERM make_map(ErlNifEnv *env, const char *const *keys, ERL_NIF_TERM *vals,
                             size_t n) {
    ERL_NIF_TERM ks[32];
    ERL_NIF_TERM map;
    for (size_t i = 0; i < n; i++)
        ks[i] = atom(env, keys[i]);
    if (!enif_make_map_from_arrays(env, ks, vals, n, &map))
        return enif_make_badarg(env);
    return map;
}

/* ------------------------------------------------------------------------------------------ */
/* Resource types                                                                              */

typedef struct writer_res writer_res;

/* One entry of the binding's writer table: the live writer resource (NULL once its process
 * exited or it was unregistered) and, when this binding reported the writer down with class
 * TEARDOWN (its monitor, a dead pid at registration, or down/3), that writer's id: the C ABI's
 * writer status does not say "orphaned", so writer_status/2 reads it here. The record is
 * cleared by unregister; a stale one (another generation of the slot) never matches an id. */
typedef struct {
    writer_res *w;
    uint64_t orphan_id;
    bool orphan;
} table_entry;

typedef struct {
    tidemark_tracker *t;
    /* Guards `segs`, `closed` and every `writer_res.state` of this tracker. */
    ErlNifMutex *lock;
    table_entry *segs[TABLE_SEGS];
    bool closed;
    /* Set once at creation, read-only afterwards. `unified_events`: option
     * `events: :unified` (see event_term / event_message). */
    bool has_subscriber;
    bool unified_events;
    ErlNifPid subscriber;
    /* Guards `menv` and the sending of ack/event messages (in ack order). */
    ErlNifMutex *pub_lock;
    ErlNifEnv *menv;
    /* ack + 1 last sent to the subscriber (0: none). Written under pub_lock; read relaxed as a
     * hint by everyone (a stale read only costs taking pub_lock). */
    _Atomic uint64_t sent_ack_plus1;
    /* Closed flag mirror readable without the lock (checked by every call). */
    atomic_bool closed_hint;
    /* Scheduler bookkeeping of this binding (relaxed statistics, see `work_stats/1`): calls
     * continued on a dirty scheduler, log work done there or by the background thread,
     * background-thread runs, and registrations moved to a dirty scheduler because the library
     * had to allocate (register_impl). `bg_running`: a background thread is draining this
     * tracker. */
    _Atomic uint64_t dirty_continuations;
    _Atomic uint64_t dirty_work;
    _Atomic uint64_t background_runs;
    _Atomic uint64_t dirty_registrations;
    atomic_bool bg_running;
} tracker_res;

enum { W_LIVE = 0, W_DOWN = 1, W_GONE = 2 };

struct writer_res {
    tracker_res *tr; /* kept (enif_keep_resource) for the writer's lifetime */
    uint64_t id;
    uint32_t class_;
    int state; /* under tr->lock */
    ErlNifMonitor mon;
};

typedef struct {
    tidemark_batch_buffer *b;
    /* Set once at creation: a serial number unique in this VM (keys the sink's linger timer,
     * see BatchBuffer.poll_batch_notify/1, without holding a reference to the buffer). */
    uint64_t serial;
    /* Guards everything below but the atomics; never held across a tidemark call. */
    ErlNifMutex *lock;
    /* The subscribed sink (buffer_subscribe): the pid notified by buffer_notify. */
    bool has_sub;
    ErlNifPid sub;
    /* The notify callback is registered with the library (once, at the first subscribe). */
    bool notify_set;
    /* Processes watching an asynchronous stop (BatchBuffer.stop_async/2): each settle, close
     * or stop sends them {:tidemark_stop_progress, buffer}. `nwatch_hint` mirrors `nwatch`
     * for a lock-free check on the ack path. */
    ErlNifPid *watchers;
    size_t nwatch, capwatch;
    atomic_size_t nwatch_hint;
} buffer_res;

typedef struct {
    _Atomic(tidemark_batch *) batch;
    buffer_res *buf; /* kept */
} batch_res;

static ErlNifResourceType *TRACKER_RT, *WRITER_RT, *BUFFER_RT, *BATCH_RT;

static tracker_res *get_tracker(ErlNifEnv *env, ERL_NIF_TERM t) {
    void *p;
    if (!enif_get_resource(env, t, TRACKER_RT, &p))
        return NULL;
    return p;
}

static buffer_res *get_buffer(ErlNifEnv *env, ERL_NIF_TERM t) {
    void *p;
    if (!enif_get_resource(env, t, BUFFER_RT, &p))
        return NULL;
    return p;
}

/* Writer table: index = slot index (low 32 bits of the id). Caller holds tr->lock. */
static table_entry *table_slot(tracker_res *tr, uint64_t id, bool create) {
    uint64_t x = (id & 0xffffffffu) + (1u << TABLE_SEG0_BITS);
    int hb = 63 - __builtin_clzll(x);
    int seg = hb - TABLE_SEG0_BITS;
    uint64_t off = x - (1ull << hb);
    if (seg < 0 || seg >= TABLE_SEGS)
        return NULL;
    if (tr->segs[seg] == NULL) {
        if (!create)
            return NULL;
        /* calloc: large segments come zeroed from mmap without touching the pages. */
        tr->segs[seg] = calloc((size_t)1 << hb, sizeof(table_entry));
        if (tr->segs[seg] == NULL)
            return NULL;
    }
    return &tr->segs[seg][off];
}

/* This binding reported `id` down with class TEARDOWN and the library accepted it. */
static void record_orphan(tracker_res *tr, uint64_t id) {
    enif_mutex_lock(tr->lock);
    table_entry *e = table_slot(tr, id, true);
    if (e) {
        e->orphan = true;
        e->orphan_id = id;
    }
    enif_mutex_unlock(tr->lock);
}

static bool is_orphan(tracker_res *tr, uint64_t id) {
    enif_mutex_lock(tr->lock);
    table_entry *e = table_slot(tr, id, false);
    bool o = e && e->orphan && e->orphan_id == id;
    enif_mutex_unlock(tr->lock);
    return o;
}

/* ------------------------------------------------------------------------------------------ */
/* Subscriber messages                                                                         */

/* After a call that may have moved the ack (and, with `events`, queued events): send what
 * changed to the subscriber. Cheap when nothing changed: one ack load and one relaxed load. */
static void publish(ErlNifEnv *caller_env, tracker_res *tr, bool events) {
    if (!tr->has_subscriber)
        return;
    uint64_t ack = 0;
    bool has_ack = tidemark_tracker_ack(tr->t, &ack) == TIDEMARK_STATUS_OK;
    if (!events &&
        (!has_ack || ack + 1 <= atomic_load_explicit(&tr->sent_ack_plus1, memory_order_relaxed)))
        return;

    enif_mutex_lock(tr->pub_lock);
    ERL_NIF_TERM tterm;
    if (events) {
        tidemark_event evs[EVENT_PAGE];
        size_t n;
        do {
            n = 0;
            if (tidemark_tracker_take_events(tr->t, evs, EVENT_PAGE, &n) != TIDEMARK_STATUS_OK)
                break;
            for (size_t i = 0; i < n; i++) {
                ErlNifEnv *m = tr->menv;
                tterm = enif_make_resource(m, tr);
                ERL_NIF_TERM msg = event_message(m, tterm, &evs[i], tr->unified_events);
                /* A successful send invalidates menv's terms: clear it for reuse either way. */
                enif_send(caller_env, &tr->subscriber, m, msg);
                enif_clear_env(m);
            }
        } while (n == EVENT_PAGE);
    }
    /* Re-read under the lock: the ack only grows, so messages go out in increasing order. */
    if (tidemark_tracker_ack(tr->t, &ack) == TIDEMARK_STATUS_OK &&
        ack + 1 > atomic_load_explicit(&tr->sent_ack_plus1, memory_order_relaxed)) {
        atomic_store_explicit(&tr->sent_ack_plus1, ack + 1, memory_order_relaxed);
        ErlNifEnv *m = tr->menv;
        tterm = enif_make_resource(m, tr);
        ERL_NIF_TERM msg = enif_make_tuple3(m, a_tidemark_ack, tterm, enif_make_uint64(m, ack));
        enif_send(caller_env, &tr->subscriber, m, msg);
        enif_clear_env(m);
    }
    enif_mutex_unlock(tr->pub_lock);
}

/* ------------------------------------------------------------------------------------------ */
/* Backlog                                                                                     */

/* Log work done so far by every call (deliveries popped + deliveries examined by compaction);
 * also the call budget and whether a backlog is left, when asked. */
static uint64_t log_work(const tracker_res *tr, uint64_t *budget, bool *backlog) {
    tidemark_work_stats w;
    if (tidemark_tracker_work_stats(tr->t, &w) != TIDEMARK_STATUS_OK) {
        memset(&w, 0, sizeof w);
    }
    if (budget)
        *budget = w.budget;
    if (backlog)
        *backlog = w.backlog;
    return w.deliveries_popped + w.entries_scanned;
}

static bool has_backlog(const tracker_res *tr) {
    bool b = false;
    return tidemark_tracker_has_backlog(tr->t, &b) == TIDEMARK_STATUS_OK && b;
}

/* Runs backlog steps (never on a normal scheduler: each examines up to one call budget) until
 * none is left or `steps` steps made progress. A step that made none (another thread holds the
 * drain token) yields the thread; BACKLOG_STUCK of them in a row end the run. Adds the log work
 * observed to `dirty_work`. Returns true when work is left and the run made progress. */
static bool run_backlog_steps(tracker_res *tr, int steps) {
    uint64_t before = log_work(tr, NULL, NULL), last = before;
    int stuck = 0;
    bool more = true;
    while (more && steps > 0) {
        if (tidemark_tracker_run_backlog(tr->t, &more) != TIDEMARK_STATUS_OK) {
            more = false;
            break;
        }
        uint64_t now = log_work(tr, NULL, NULL);
        if (now != last) {
            last = now;
            stuck = 0;
            steps--;
        } else if (more) {
            if (++stuck >= BACKLOG_STUCK) {
                more = false;
                break;
            }
            sched_yield();
        }
    }
    atomic_fetch_add_explicit(&tr->dirty_work, last - before, memory_order_relaxed);
    return more;
}

/* Dirty CPU continuation of a tracker call: argv = [tracker, result, events]. Runs the backlog
 * (rescheduling itself every BACKLOG_STEPS steps), publishes, then returns the call's result.
 * The tracker term in argv keeps the resource alive across the reschedules. */
static ERL_NIF_TERM backlog_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    tracker_res *tr = get_tracker(env, argv[0]);
    if (!tr)
        return enif_make_badarg(env);
    if (run_backlog_steps(tr, BACKLOG_STEPS))
        return enif_schedule_nif(env, "tracker_backlog_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 backlog_dirty, argc, argv);
    publish(env, tr, enif_is_identical(argv[2], a_true));
    return argv[1];
}

/* The end of every tracker NIF that can run the log: with no backlog left, publish and return
 * `result`; otherwise continue on a dirty CPU scheduler (publishing there: taking events would
 * also run the backlog). `tterm` is the tracker term of the call (argv[0]). */
static ERL_NIF_TERM finish_call(ErlNifEnv *env, tracker_res *tr, ERL_NIF_TERM tterm,
                                ERL_NIF_TERM result, bool events) {
    if (!has_backlog(tr)) {
        publish(env, tr, events);
        return result;
    }
    if (enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
        atomic_fetch_add_explicit(&tr->dirty_continuations, 1, memory_order_relaxed);
    /* The ack may have moved within this call's budget: tell the subscriber now. */
    publish(env, tr, false);
    ERL_NIF_TERM args[] = {tterm, result, make_bool(events)};
    return enif_schedule_nif(env, "tracker_backlog_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                             backlog_dirty, 3, args);
}

/* Background thread for a backlog left by a monitor's down callback (which cannot reschedule):
 * drains, publishes, and ends; it keeps the tracker resource until then. */
static void *backlog_thread(void *arg) {
    tracker_res *tr = arg;
    bool progress;
    /* The down callback that started us left its events to us: first, so the subscriber sees
     * them before the acks they caused. */
    publish(NULL, tr, true);
    do {
        uint64_t w0 = log_work(tr, NULL, NULL);
        while (run_backlog_steps(tr, BACKLOG_STEPS))
            publish(NULL, tr, false);
        publish(NULL, tr, true);
        progress = log_work(tr, NULL, NULL) != w0;
        atomic_fetch_add_explicit(&tr->background_runs, 1, memory_order_relaxed);
        atomic_store(&tr->bg_running, false);
        /* A backlog left after our last look is ours again unless another thread took it. */
    } while (progress && has_backlog(tr) && !atomic_exchange(&tr->bg_running, true));
    enif_release_resource(tr);
    return NULL;
}

/* At most one background thread per tracker; a backlog it misses is continued by the next
 * call (of any kind) or the next down callback. True when this call started one (which then
 * publishes acks and events). */
static bool start_background(tracker_res *tr) {
    if (!has_backlog(tr) || atomic_exchange(&tr->bg_running, true))
        return false;
    enif_keep_resource(tr);
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, backlog_thread, tr);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        atomic_store(&tr->bg_running, false);
        enif_release_resource(tr);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Resource callbacks                                                                          */

static void *release_thread(void *arg) {
    writer_res **ws = arg;
    for (size_t i = 0; ws[i] != NULL; i++)
        enif_release_resource(ws[i]);
    free(ws);
    return NULL;
}

/* Marks the tracker closed and lets go of every writer resource (their monitors go with
 * them). Returns the number of writers released. */
static size_t close_tracker(tracker_res *tr) {
    enif_mutex_lock(tr->lock);
    if (tr->closed) {
        enif_mutex_unlock(tr->lock);
        return 0;
    }
    tr->closed = true;
    atomic_store(&tr->closed_hint, true);
    size_t n = 0;
    for (int s = 0; s < TABLE_SEGS; s++) {
        if (!tr->segs[s])
            continue;
        size_t len = (size_t)1 << (s + TABLE_SEG0_BITS);
        for (size_t i = 0; i < len; i++)
            if (tr->segs[s][i].w)
                n++;
    }
    writer_res **ws = calloc(n + 1, sizeof *ws);
    size_t k = 0;
    for (int s = 0; s < TABLE_SEGS; s++) {
        if (!tr->segs[s])
            continue;
        size_t len = (size_t)1 << (s + TABLE_SEG0_BITS);
        for (size_t i = 0; i < len; i++) {
            writer_res *w = tr->segs[s][i].w;
            if (w) {
                w->state = W_GONE;
                tr->segs[s][i].w = NULL;
                if (ws)
                    ws[k++] = w;
            }
        }
    }
    enif_mutex_unlock(tr->lock);
    if (!ws)
        return n; /* out of memory: the writers leak rather than crash */
    if (k > 1024) {
        /* Releasing many resources takes a while: not on a scheduler. */
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, release_thread, ws);
        pthread_attr_destroy(&attr);
        if (rc == 0)
            return k;
    }
    release_thread(ws);
    return k;
}

static void tracker_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    tracker_res *tr = obj;
    /* Every writer resource keeps the tracker: when this runs, the table is empty. */
    for (int s = 0; s < TABLE_SEGS; s++)
        free(tr->segs[s]);
    if (tr->t)
        tidemark_tracker_free(tr->t);
    if (tr->menv)
        enif_free_env(tr->menv);
    if (tr->pub_lock)
        enif_mutex_destroy(tr->pub_lock);
    if (tr->lock)
        enif_mutex_destroy(tr->lock);
}

/* The tracker's owner process exited: close it (like an ETS table). */
static void tracker_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon) {
    (void)env;
    (void)pid;
    (void)mon;
    close_tracker(obj);
}

static void writer_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    writer_res *w = obj;
    if (w->tr)
        enif_release_resource(w->tr);
}

/* The writer's process exited (any reason, :kill included). Runs in ERTS, no Elixir code:
 * report it with the writer's class, publish the consequences, drop the table's reference. */
static void writer_down(ErlNifEnv *env, void *obj, ErlNifPid *pid, ErlNifMonitor *mon) {
    (void)pid;
    (void)mon;
    writer_res *w = obj;
    tracker_res *tr = w->tr;
    bool live = false;
    enif_mutex_lock(tr->lock);
    if (w->state == W_LIVE) {
        live = true;
        w->state = W_DOWN;
        table_entry *slot = table_slot(tr, w->id, false);
        if (slot && slot->w == w)
            slot->w = NULL;
    }
    enif_mutex_unlock(tr->lock);
    if (!live)
        return;
    if (tidemark_tracker_down(tr->t, w->id, w->class_, tidemark_monotonic_ms()) ==
            TIDEMARK_STATUS_OK &&
        w->class_ == TIDEMARK_DOWN_CLASS_TEARDOWN)
        record_orphan(tr, w->id);
    /* Releasing a long-pinned head can leave a backlog: a native thread finishes it and
     * publishes (taking events here would run the backlog on this scheduler). */
    if (!start_background(tr))
        publish(env, tr, true);
    /* The table's reference (ERTS holds its own during this callback). */
    enif_release_resource(w);
}

/* ------------------------------------------------------------------------------------------ */
/* Batch buffer notification                                                                   */

/* The env of the NIF call running a tidemark call on this thread (see BUFFER_CALL), or NULL. */
static _Thread_local ErlNifEnv *tls_env;

static tidemark_status leave_env(tidemark_status s) {
    tls_env = NULL;
    return s;
}

/* Runs `expr` (a tidemark buffer call returning a status) with `tls_env` set to the calling
 * NIF's env, so a notify callback it makes sends with that env. */
#define BUFFER_CALL(env, expr) (tls_env = (env), leave_env(expr))

/* {:tidemark_batch_ready, buffer} to `pid`, from `caller_env` (NULL off ERTS threads). */
static void send_ready(ErlNifEnv *caller_env, buffer_res *br, const ErlNifPid *pid) {
    ErlNifEnv *m = enif_alloc_env();
    if (!m)
        return;
    ERL_NIF_TERM msg = enif_make_tuple2(m, a_tidemark_batch_ready, enif_make_resource(m, br));
    enif_send(caller_env, pid, m, msg);
    enif_free_env(m);
}

typedef struct {
    buffer_res *br; /* kept */
    ErlNifPid pid;
} deferred_ready;

static void *deferred_ready_thread(void *arg) {
    deferred_ready *d = arg;
    send_ready(NULL, d->br, &d->pid); /* not an ERTS thread: NULL env */
    enif_release_resource(d->br);
    free(d);
    return NULL;
}

/* The library's notify callback (ctx = buffer_res): tells the subscribed sink to poll. Never
 * blocks (one uncontended mutex to copy the pid, one message). */
static void buffer_notify(void *ctx) {
    buffer_res *br = ctx;
    ErlNifPid pid;
    enif_mutex_lock(br->lock);
    bool has = br->has_sub;
    if (has)
        pid = br->sub;
    enif_mutex_unlock(br->lock);
    if (!has)
        return;
    ErlNifEnv *env = tls_env;
    if (env || enif_thread_type() == ERL_NIF_THR_UNDEFINED) {
        send_ready(env, br, &pid);
        return;
    }
    /* An ERTS thread outside any call of ours: it has no env we may use, and a NULL env is
     * only for non-ERTS threads. Send from a native thread instead (no such path exists
     * today; this keeps a future one correct). */
    deferred_ready *d = malloc(sizeof *d);
    if (!d)
        return;
    d->br = br;
    d->pid = pid;
    enif_keep_resource(br);
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, deferred_ready_thread, d);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        enif_release_resource(br);
        free(d);
    }
}

/* Sends {:tidemark_stop_progress, buffer} to every stop watcher (cheap when there are none:
 * one atomic load). Called after every call that can finish a stop. */
static void ping_stop_watchers(ErlNifEnv *env, buffer_res *br) {
    if (atomic_load_explicit(&br->nwatch_hint, memory_order_seq_cst) == 0)
        return;
    ErlNifPid local[8];
    ErlNifPid *ps = local;
    enif_mutex_lock(br->lock);
    size_t n = br->nwatch;
    if (n > 8)
        ps = enif_alloc(sizeof *ps * n);
    if (ps)
        memcpy(ps, br->watchers, sizeof *ps * n);
    enif_mutex_unlock(br->lock);
    if (!ps)
        return;
    ErlNifEnv *m = enif_alloc_env();
    if (m) {
        for (size_t i = 0; i < n; i++) {
            ERL_NIF_TERM msg =
                enif_make_tuple2(m, a_tidemark_stop_progress, enif_make_resource(m, br));
            enif_send(env, &ps[i], m, msg);
            enif_clear_env(m);
        }
        enif_free_env(m);
    }
    if (ps != local)
        enif_free(ps);
}

static void buffer_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    buffer_res *br = obj;
    if (br->b) {
        /* Freeing a running buffer stops it, which would notify: remove the callback first
         * (nothing else can be calling into the buffer now). */
        if (br->notify_set)
            tidemark_batch_buffer_set_notify(br->b, NULL, NULL);
        tidemark_batch_buffer_free(br->b);
    }
    if (br->lock)
        enif_mutex_destroy(br->lock);
    if (br->watchers)
        enif_free(br->watchers);
}

static void batch_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    batch_res *b = obj;
    tidemark_batch *batch = atomic_exchange(&b->batch, NULL);
    if (batch)
        tidemark_batch_free(batch);
    if (b->buf)
        enif_release_resource(b->buf);
}

/* ------------------------------------------------------------------------------------------ */
/* Tracker NIFs                                                                                */

#define TRACKER_ARG(var)                                                                       \
    tracker_res *var = get_tracker(env, argv[0]);                                              \
    if (!var)                                                                                  \
        return enif_make_badarg(env);

/* The writer id in argv[1], or badarg. */
#define WRITER_ARG(var)                                                                        \
    uint64_t var;                                                                              \
    if (!get_writer(env, argv[1], &var))                                                       \
        return enif_make_badarg(env)

#define CLOSED_CHECK(tr)                                                                       \
    if (atomic_load_explicit(&(tr)->closed_hint, memory_order_relaxed))                        \
        return error_tuple(env, status_atoms[TIDEMARK_STATUS_CLOSED]);

/* tracker_new(stall_grace_ms | nil, initial_ack | nil, subscriber | nil, owner, max_writers | nil,
 *             expected_writers | nil, event_capacity | nil, :legacy | :unified) */
static ERL_NIF_TERM tracker_new_impl(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    tidemark_tracker_options o;
    if (tidemark_tracker_options_default(&o) != TIDEMARK_STATUS_OK)
        return error_tuple(env, a_enomem);
    bool has_initial = false;
    ErlNifPid sub, owner;
    bool has_sub = !enif_is_identical(argv[2], a_nil);
    if (!get_opt_u64(env, argv[0], &o.stall_grace_ms, NULL) ||
        !get_opt_u64(env, argv[1], &o.initial_ack, &has_initial) ||
        (has_sub && !enif_get_local_pid(env, argv[2], &sub)) ||
        !enif_get_local_pid(env, argv[3], &owner) ||
        !get_opt_size(env, argv[4], &o.max_writers) ||
        !get_opt_size(env, argv[5], &o.expected_writers) ||
        !get_opt_size(env, argv[6], &o.event_capacity) ||
        (!enif_is_identical(argv[7], a_legacy) && !enif_is_identical(argv[7], a_unified)))
        return enif_make_badarg(env);
    o.has_initial_ack = has_initial;

    tidemark_tracker *t = NULL;
    tidemark_status s = tidemark_tracker_new(&o, &t);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);

    tracker_res *tr = enif_alloc_resource(TRACKER_RT, sizeof *tr);
    memset(tr, 0, sizeof *tr);
    tr->t = t;
    tr->lock = enif_mutex_create("tidemark.tracker");
    tr->pub_lock = enif_mutex_create("tidemark.tracker.pub");
    tr->menv = enif_alloc_env();
    tr->has_subscriber = has_sub;
    tr->unified_events = enif_is_identical(argv[7], a_unified);
    if (has_sub)
        tr->subscriber = sub;
    atomic_init(&tr->sent_ack_plus1, 0);
    atomic_init(&tr->closed_hint, false);
    atomic_init(&tr->dirty_continuations, 0);
    atomic_init(&tr->dirty_work, 0);
    atomic_init(&tr->background_runs, 0);
    atomic_init(&tr->dirty_registrations, 0);
    atomic_init(&tr->bg_running, false);
    if (!tr->lock || !tr->pub_lock || !tr->menv) {
        enif_release_resource(tr);
        return error_tuple(env, a_enomem);
    }
    /* An initial ack is known from the start: it is not an advance, do not send it. */
    uint64_t ack;
    if (tidemark_tracker_ack(t, &ack) == TIDEMARK_STATUS_OK)
        atomic_store(&tr->sent_ack_plus1, ack + 1);
    ErlNifMonitor mon;
    int rc = enif_monitor_process(env, tr, &owner, &mon);
    ERL_NIF_TERM term = enif_make_resource(env, tr);
    enif_release_resource(tr);
    if (rc > 0)
        close_tracker(tr); /* the owner is already dead */
    return ok_tuple(env, term);
}

/* Allocating many writer slots up front takes a while: do it on a dirty scheduler. */
static ERL_NIF_TERM nif_tracker_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    uint64_t expected = 0;
    if (argc == 8 && get_u64(env, argv[5], &expected) && expected > DIRTY_EXPECTED_WRITERS)
        return enif_schedule_nif(env, "tracker_new_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 tracker_new_impl, argc, argv);
    return tracker_new_impl(env, argc, argv);
}

static ERL_NIF_TERM nif_tracker_close(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    close_tracker(tr);
    return a_ok;
}

/* tracker_register(t, pid, class) -> {:ok, id}. On a normal scheduler it registers with
 * `tidemark_tracker_register_if_allocated`, which never allocates; only when that declines
 * (WOULD_BLOCK: the library's writer table would have to grow, nothing changed) does the call
 * move to a dirty CPU scheduler, where it runs again and registers with the allocating
 * `tidemark_tracker_register`. The library decides under its own lock whether a slot is free,
 * so concurrent registrations need no bookkeeping here. */
static ERL_NIF_TERM register_impl(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    TRACKER_ARG(tr);
    ErlNifPid pid;
    uint32_t class_;
    if (!enif_get_local_pid(env, argv[1], &pid) || !get_class(argv[2], &class_))
        return enif_make_badarg(env);
    CLOSED_CHECK(tr);

    uint64_t id;
    tidemark_status s;
    if (enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER) {
        s = tidemark_tracker_register_if_allocated(tr->t, &id);
        if (s == TIDEMARK_STATUS_WOULD_BLOCK) {
            atomic_fetch_add_explicit(&tr->dirty_registrations, 1, memory_order_relaxed);
            return enif_schedule_nif(env, "tracker_register_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                     register_impl, argc, argv);
        }
    } else {
        s = tidemark_tracker_register(tr->t, &id);
    }
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);

    writer_res *w = enif_alloc_resource(WRITER_RT, sizeof *w);
    memset(w, 0, sizeof *w);
    w->tr = tr;
    enif_keep_resource(tr);
    w->id = id;
    w->class_ = class_;
    w->state = W_LIVE;

    enif_mutex_lock(tr->lock);
    table_entry *slot = tr->closed ? NULL : table_slot(tr, id, true);
    if (!slot) {
        bool closed = tr->closed;
        enif_mutex_unlock(tr->lock);
        enif_release_resource(w);
        (void)tidemark_tracker_unregister(tr->t, id);
        return error_tuple(env, closed ? status_atoms[TIDEMARK_STATUS_CLOSED] : a_enomem);
    }
    /* The table owns the allocation reference. Insert before monitoring: the down callback
     * may run on another scheduler as soon as the monitor exists (it waits for the lock). */
    slot->w = w;
    int rc = enif_monitor_process(env, w, &pid, &w->mon);
    bool dead = rc != 0;
    if (dead) {
        w->state = W_DOWN;
        slot->w = NULL;
    }
    enif_mutex_unlock(tr->lock);

    if (dead) {
        /* Already dead at registration: report it now, exactly as the monitor would. */
        if (tidemark_tracker_down(tr->t, id, class_, tidemark_monotonic_ms()) ==
                TIDEMARK_STATUS_OK &&
            class_ == TIDEMARK_DOWN_CLASS_TEARDOWN)
            record_orphan(tr, id);
        enif_release_resource(w);
        return finish_call(env, tr, argv[0], ok_tuple(env, enif_make_uint64(env, id)), true);
    }
    return ok_tuple(env, enif_make_uint64(env, id));
}

static ERL_NIF_TERM nif_tracker_register(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    return register_impl(env, argc, argv);
}

static int get_writer(ErlNifEnv *env, ERL_NIF_TERM t, uint64_t *id) { return get_u64(env, t, id); }

static ERL_NIF_TERM nif_tracker_unregister(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    WRITER_ARG(id);
    writer_res *w = NULL;
    enif_mutex_lock(tr->lock);
    table_entry *slot = table_slot(tr, id, false);
    if (slot && slot->w && slot->w->id == id) {
        w = slot->w;
        slot->w = NULL;
        w->state = W_GONE;
    }
    enif_mutex_unlock(tr->lock);
    if (w) {
        enif_demonitor_process(env, w, &w->mon);
        enif_release_resource(w);
    }
    tidemark_status s = tidemark_tracker_unregister(tr->t, id);
    if (s == TIDEMARK_STATUS_OK) {
        enif_mutex_lock(tr->lock);
        table_entry *e = table_slot(tr, id, false);
        if (e && e->orphan && e->orphan_id == id)
            e->orphan = false;
        enif_mutex_unlock(tr->lock);
    }
    return finish_call(env, tr, argv[0], ok_or_error(env, s), false);
}

static ERL_NIF_TERM nif_tracker_down(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    uint64_t id;
    uint32_t class_;
    if (!get_writer(env, argv[1], &id) || !get_class(argv[2], &class_))
        return enif_make_badarg(env);
    CLOSED_CHECK(tr);
    tidemark_status s = tidemark_tracker_down(tr->t, id, class_, tidemark_monotonic_ms());
    if (s == TIDEMARK_STATUS_OK && class_ == TIDEMARK_DOWN_CLASS_TEARDOWN)
        record_orphan(tr, id);
    return finish_call(env, tr, argv[0], ok_or_error(env, s), true);
}

static ERL_NIF_TERM nif_tracker_writer_status(ErlNifEnv *env, int argc,
                                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    WRITER_ARG(id);
    tidemark_writer_status st;
    tidemark_status s = tidemark_tracker_writer_status(tr->t, id, &st);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    switch (st.state) {
    case TIDEMARK_WRITER_STATE_IDLE:
    case TIDEMARK_WRITER_STATE_PENDING:
        /* Not evicted: orphaned if this binding reported it down as TEARDOWN. */
        if (is_orphan(tr, id))
            return ok_tuple(env, a_orphaned);
        return ok_tuple(env, st.state == TIDEMARK_WRITER_STATE_IDLE ? a_idle : a_pending);
    default: return ok_tuple(env, enif_make_tuple2(env, a_evicted, reason_atom(st.reason)));
    }
}

/* tracker_commit(t, {tx, op}, [writer]) */
static ERL_NIF_TERM commit_impl(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    tidemark_offset off;
    unsigned len;
    if (!get_offset(env, argv[1], &off) || !enif_get_list_length(env, argv[2], &len))
        return enif_make_badarg(env);
    uint64_t stack[16];
    uint64_t *ws = len <= 16 ? stack : enif_alloc(sizeof(uint64_t) * len);
    if (!ws)
        return error_tuple(env, a_enomem);
    ERL_NIF_TERM list = argv[2], head;
    for (unsigned i = 0; i < len; i++) {
        enif_get_list_cell(env, list, &head, &list);
        if (!get_writer(env, head, &ws[i])) {
            if (ws != stack)
                enif_free(ws);
            return enif_make_badarg(env);
        }
    }
    ERL_NIF_TERM ret;
    if (atomic_load_explicit(&tr->closed_hint, memory_order_relaxed)) {
        ret = error_tuple(env, status_atoms[TIDEMARK_STATUS_CLOSED]);
    } else {
        tidemark_status s = tidemark_tracker_commit(tr->t, off, len ? ws : NULL, len,
                                                    tidemark_monotonic_ms());
        ret = finish_call(env, tr, argv[0], ok_or_error(env, s), false);
    }
    if (ws != stack)
        enif_free(ws);
    return ret;
}

static ERL_NIF_TERM nif_tracker_commit(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    unsigned len;
    if (argc == 3 && enif_get_list_length(env, argv[2], &len) && len > DIRTY_ITEMS)
        return enif_schedule_nif(env, "tracker_commit_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 commit_impl, argc, argv);
    return commit_impl(env, argc, argv);
}

static ERL_NIF_TERM nif_tracker_flushed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    uint64_t id;
    tidemark_offset off;
    if (!get_writer(env, argv[1], &id) || !get_offset(env, argv[2], &off))
        return enif_make_badarg(env);
    CLOSED_CHECK(tr);
    tidemark_status s = tidemark_tracker_flushed(tr->t, id, off, tidemark_monotonic_ms());
    return finish_call(env, tr, argv[0], ok_or_error(env, s), false);
}

/* tracker_flushed_many(t, [{writer, {tx, op}}]) -> {:ok, [{writer, reason}]} (failures only).
 * Continued on a dirty CPU scheduler as (t, rest, failures so far, newest first). On a normal
 * scheduler the reports are applied while the log work they caused (all threads' work, read
 * from the counters: an overestimate under concurrency) stays below one call budget and no
 * backlog is left; each report itself examines at most one budget, so the normal-scheduler part
 * stays below two. The rest of the list, and any backlog, go to a dirty CPU scheduler. */
static ERL_NIF_TERM flushed_many_impl(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    TRACKER_ARG(tr);
    unsigned len;
    if (!enif_get_list_length(env, argv[1], &len))
        return enif_make_badarg(env);
    bool continued = argc == 3;
    ERL_NIF_TERM fails = continued ? argv[2] : enif_make_list(env, 0);
    enum { STACK = 64 };
    uint64_t ws_s[STACK];
    tidemark_offset os_s[STACK];
    bool heap = len > STACK;
    uint64_t *ws = heap ? enif_alloc(sizeof *ws * len) : ws_s;
    tidemark_offset *os = heap ? enif_alloc(sizeof *os * len) : os_s;
    ERL_NIF_TERM ret;
    if (!ws || !os) {
        ret = error_tuple(env, a_enomem);
        goto out;
    }
    /* Every report is checked before any is applied: a malformed list changes nothing. */
    ERL_NIF_TERM list = argv[1], head;
    for (unsigned i = 0; i < len; i++) {
        int arity;
        const ERL_NIF_TERM *el;
        enif_get_list_cell(env, list, &head, &list);
        if (!enif_get_tuple(env, head, &arity, &el) || arity != 2 ||
            !get_writer(env, el[0], &ws[i]) || !get_offset(env, el[1], &os[i])) {
            ret = enif_make_badarg(env);
            goto out;
        }
    }
    if (!continued && atomic_load_explicit(&tr->closed_hint, memory_order_relaxed)) {
        ret = error_tuple(env, status_atoms[TIDEMARK_STATUS_CLOSED]);
        goto out;
    }
    bool normal = enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER;
    uint64_t budget = 0;
    uint64_t w0 = log_work(tr, &budget, NULL);
    uint64_t now = tidemark_monotonic_ms();
    unsigned done = 0;
    while (done < len) {
        tidemark_status st = tidemark_tracker_flushed(tr->t, ws[done], os[done], now);
        if (st != TIDEMARK_STATUS_OK)
            fails = enif_make_list_cell(
                env, enif_make_tuple2(env, enif_make_uint64(env, ws[done]), status_atom(st)),
                fails);
        done++;
        if (normal && done < len) {
            bool backlog = false;
            if (log_work(tr, NULL, &backlog) - w0 >= budget || backlog)
                break;
        }
    }
    if (!normal)
        atomic_fetch_add_explicit(&tr->dirty_work, log_work(tr, NULL, NULL) - w0,
                                  memory_order_relaxed);
    if (done < len) {
        /* Budget reached on a normal scheduler: the rest on a dirty one. */
        ERL_NIF_TERM rest = argv[1];
        for (unsigned i = 0; i < done; i++)
            enif_get_list_cell(env, rest, &head, &rest);
        atomic_fetch_add_explicit(&tr->dirty_continuations, 1, memory_order_relaxed);
        publish(env, tr, false);
        ERL_NIF_TERM args[] = {argv[0], rest, fails};
        ret = enif_schedule_nif(env, "tracker_flushed_many_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                flushed_many_impl, 3, args);
        goto out;
    }
    ERL_NIF_TERM in_order;
    enif_make_reverse_list(env, fails, &in_order);
    ret = finish_call(env, tr, argv[0], ok_tuple(env, in_order), false);
out:
    if (heap) {
        enif_free(ws);
        enif_free(os);
    }
    return ret;
}

static ERL_NIF_TERM nif_tracker_flushed_many(ErlNifEnv *env, int argc,
                                             const ERL_NIF_TERM argv[]) {
    unsigned len;
    if (argc == 2 && enif_get_list_length(env, argv[1], &len) && len > DIRTY_ITEMS)
        return enif_schedule_nif(env, "tracker_flushed_many_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 flushed_many_impl, argc, argv);
    return flushed_many_impl(env, argc, argv);
}

/* remove / touch / pause / resume: (t, writer) */
static ERL_NIF_TERM nif_tracker_remove(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    WRITER_ARG(id);
    CLOSED_CHECK(tr);
    tidemark_status s = tidemark_tracker_remove(tr->t, id);
    return finish_call(env, tr, argv[0], ok_or_error(env, s), true);
}

static ERL_NIF_TERM nif_tracker_touch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    WRITER_ARG(id);
    CLOSED_CHECK(tr);
    tidemark_status s = tidemark_tracker_touch(tr->t, id, tidemark_monotonic_ms());
    return finish_call(env, tr, argv[0], ok_or_error(env, s), false);
}

static ERL_NIF_TERM nif_tracker_pause(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    WRITER_ARG(id);
    CLOSED_CHECK(tr);
    tidemark_status s = tidemark_tracker_pause(tr->t, id);
    return finish_call(env, tr, argv[0], ok_or_error(env, s), false);
}

static ERL_NIF_TERM nif_tracker_resume(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    WRITER_ARG(id);
    CLOSED_CHECK(tr);
    tidemark_status s = tidemark_tracker_resume(tr->t, id, tidemark_monotonic_ms());
    return finish_call(env, tr, argv[0], ok_or_error(env, s), false);
}

/* Dirty CPU: a sweep costs O(expired · log n), unbounded when many writers expire at once. */
static ERL_NIF_TERM nif_tracker_sweep(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    CLOSED_CHECK(tr);
    tidemark_sweep_outcome out;
    tidemark_status s = tidemark_tracker_sweep(tr->t, tidemark_monotonic_ms(), &out);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    static const char *const keys[] = {"challenged", "evicted"};
    ERL_NIF_TERM vals[] = {enif_make_uint64(env, out.challenged),
                           enif_make_uint64(env, out.evicted)};
    return finish_call(env, tr, argv[0], ok_tuple(env, make_map(env, keys, vals, 2)),
                       out.challenged + out.evicted > 0);
}

static ERL_NIF_TERM nif_tracker_ack(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    uint64_t ack;
    tidemark_status s = tidemark_tracker_ack(tr->t, &ack);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    return ok_tuple(env, enif_make_uint64(env, ack));
}

static ERL_NIF_TERM nif_tracker_pinning(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    tidemark_pinning p;
    tidemark_status s = tidemark_tracker_pinning(tr->t, tidemark_monotonic_ms(), &p);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    static const char *const keys[] = {"writer", "owes", "flushed", "ms_since_progress",
                                       "paused", "challenged", "orphaned"};
    ERL_NIF_TERM vals[] = {
        enif_make_uint64(env, p.writer),
        make_offset(env, p.owes),
        p.has_flushed ? make_offset(env, p.flushed) : a_nil,
        enif_make_uint64(env, p.ms_since_progress),
        make_bool(p.paused),
        make_bool(p.challenged),
        make_bool(p.orphaned),
    };
    return ok_tuple(env, make_map(env, keys, vals, 7));
}

static ERL_NIF_TERM nif_tracker_stats(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    tidemark_tracker_counters c;
    tidemark_status s = tidemark_tracker_stats(tr->t, tidemark_monotonic_ms(), &c);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    static const char *const keys[] = {
        "ack",        "last_seen",       "ack_lag",          "ack_advances",   "registered",
        "pending",    "commits",         "flushes",          "late_flushes",   "removes",
        "challenges", "evicted_crashed", "evicted_orphaned", "evicted_stalled", "events_dropped",
        "memory_bytes",
    };
    ERL_NIF_TERM vals[] = {
        c.has_ack ? enif_make_uint64(env, c.ack) : a_nil,
        c.has_last_seen ? make_offset(env, c.last_seen) : a_nil,
        enif_make_uint64(env, c.ack_lag),
        enif_make_uint64(env, c.ack_advances),
        enif_make_uint64(env, c.registered),
        enif_make_uint64(env, c.pending),
        enif_make_uint64(env, c.commits),
        enif_make_uint64(env, c.flushes),
        enif_make_uint64(env, c.late_flushes),
        enif_make_uint64(env, c.removes),
        enif_make_uint64(env, c.challenges),
        enif_make_uint64(env, c.evicted_crashed),
        enif_make_uint64(env, c.evicted_orphaned),
        enif_make_uint64(env, c.evicted_stalled),
        enif_make_uint64(env, c.events_dropped),
        enif_make_uint64(env, c.memory_bytes),
    };
    return ok_tuple(env, make_map(env, keys, vals, sizeof vals / sizeof vals[0]));
}

/* Polling alternative to the subscriber: up to 256 events, oldest first. */
static ERL_NIF_TERM nif_tracker_take_events(ErlNifEnv *env, int argc,
                                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    tidemark_event evs[256];
    size_t n = 0;
    tidemark_status s = tidemark_tracker_take_events(tr->t, evs, 256, &n);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;)
        list = enif_make_list_cell(env, event_term(env, &evs[i], tr->unified_events), list);
    return finish_call(env, tr, argv[0], ok_tuple(env, list), false);
}

/* {:ok, map}: the library's work counters plus this binding's backlog counters. */
static ERL_NIF_TERM nif_tracker_work_stats(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    tidemark_work_stats w;
    tidemark_status s = tidemark_tracker_work_stats(tr->t, &w);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    static const char *const keys[] = {
        "budget",   "deliveries_popped",   "entries_scanned", "max_call_work",
        "backlogs", "backlog",             "log_len",         "dirty_continuations",
        "dirty_work", "background_runs", "dirty_registrations",
    };
    ERL_NIF_TERM vals[] = {
        enif_make_uint64(env, w.budget),
        enif_make_uint64(env, w.deliveries_popped),
        enif_make_uint64(env, w.entries_scanned),
        enif_make_uint64(env, w.max_call_work),
        enif_make_uint64(env, w.backlogs),
        make_bool(w.backlog),
        enif_make_uint64(env, w.log_len),
        enif_make_uint64(env, atomic_load_explicit(&tr->dirty_continuations, memory_order_relaxed)),
        enif_make_uint64(env, atomic_load_explicit(&tr->dirty_work, memory_order_relaxed)),
        enif_make_uint64(env, atomic_load_explicit(&tr->background_runs, memory_order_relaxed)),
        enif_make_uint64(env, atomic_load_explicit(&tr->dirty_registrations, memory_order_relaxed)),
    };
    return ok_tuple(env, make_map(env, keys, vals, sizeof vals / sizeof vals[0]));
}

static ERL_NIF_TERM nif_tracker_set_call_budget(ErlNifEnv *env, int argc,
                                                const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    uint64_t budget;
    if (!get_u64(env, argv[1], &budget))
        return enif_make_badarg(env);
    return ok_or_error(env, tidemark_tracker_set_call_budget(tr->t, budget));
}

/* One budgeted step of leftover work, on the calling (normal) scheduler: {:ok, more}. */
static ERL_NIF_TERM nif_tracker_run_backlog(ErlNifEnv *env, int argc,
                                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    bool more = false;
    tidemark_status s = tidemark_tracker_run_backlog(tr->t, &more);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    publish(env, tr, false);
    return ok_tuple(env, make_bool(more));
}

static ERL_NIF_TERM nif_tracker_has_backlog(ErlNifEnv *env, int argc,
                                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    TRACKER_ARG(tr);
    bool b = false;
    tidemark_status s = tidemark_tracker_has_backlog(tr->t, &b);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    return ok_tuple(env, make_bool(b));
}

/* ------------------------------------------------------------------------------------------ */
/* Batch buffer NIFs                                                                           */

#define BUFFER_ARG(var)                                                                        \
    buffer_res *var = get_buffer(env, argv[0]);                                                \
    if (!var)                                                                                  \
        return enif_make_badarg(env);

/* buffer_new(max_messages, max_bytes, linger_us, capacity_messages, capacity_bytes,
 *            max_inflight_batches), each nil for the default */
static ERL_NIF_TERM nif_buffer_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    static _Atomic uint64_t next_serial = 1;
    tidemark_batch_config c;
    if (tidemark_batch_config_default(&c) != TIDEMARK_STATUS_OK)
        return error_tuple(env, a_enomem);
    if (!get_opt_size(env, argv[0], &c.max_messages) ||
        !get_opt_u64(env, argv[1], &c.max_bytes, NULL) ||
        !get_opt_u64(env, argv[2], &c.linger_us, NULL) ||
        !get_opt_size(env, argv[3], &c.capacity_messages) ||
        !get_opt_u64(env, argv[4], &c.capacity_bytes, NULL) ||
        !get_opt_size(env, argv[5], &c.max_inflight_batches))
        return enif_make_badarg(env);
    ErlNifMutex *lock = enif_mutex_create("tidemark.buffer");
    if (!lock)
        return error_tuple(env, a_enomem);
    tidemark_batch_buffer *b = NULL;
    tidemark_status s = tidemark_batch_buffer_new(&c, &b);
    if (s != TIDEMARK_STATUS_OK) {
        enif_mutex_destroy(lock);
        return ok_or_error(env, s);
    }
    buffer_res *br = enif_alloc_resource(BUFFER_RT, sizeof *br);
    memset(br, 0, sizeof *br);
    br->b = b;
    br->lock = lock;
    br->serial = atomic_fetch_add(&next_serial, 1);
    atomic_init(&br->nwatch_hint, 0);
    ERL_NIF_TERM term = enif_make_resource(env, br);
    enif_release_resource(br);
    return ok_tuple(env, term);
}

/* binary | {binary, {tx, op} | nil}: a view into the binary (enif_inspect_binary copies
 * nothing; the bytes stay valid for the NIF call, and the library copies them during it). */
static int get_message(ErlNifEnv *env, ERL_NIF_TERM t, tidemark_message *m) {
    ErlNifBinary bin;
    int arity;
    const ERL_NIF_TERM *el;
    memset(m, 0, sizeof *m);
    if (enif_get_tuple(env, t, &arity, &el)) {
        if (arity != 2 || !enif_inspect_binary(env, el[0], &bin))
            return 0;
        if (!enif_is_identical(el[1], a_nil)) {
            if (!get_offset(env, el[1], &m->offset))
                return 0;
            m->has_offset = true;
        }
    } else if (!enif_inspect_binary(env, t, &bin)) {
        return 0;
    }
    m->data = bin.size ? bin.data : NULL;
    m->len = bin.size;
    return 1;
}

static ERL_NIF_TERM nif_buffer_push(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    tidemark_message m;
    if (!get_message(env, argv[1], &m))
        return enif_make_badarg(env);
    return ok_or_error(env, BUFFER_CALL(env, tidemark_batch_buffer_try_push(br->b, &m)));
}

/* Views of up to this many messages live on the stack (40 bytes each). */
#define PUSH_STACK 256

/* {:ok, n} when all n were taken; {:error, reason, accepted} otherwise. One library call for
 * the whole list: an array of views into the binaries (nothing copied here), which the library
 * copies straight into its arena. One walk over the list: on a normal scheduler, a list longer
 * than DIRTY_ITEMS is handed to a dirty CPU scheduler once that many items were read. */
static ERL_NIF_TERM push_many_impl(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    BUFFER_ARG(br);
    bool normal = enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER;
    tidemark_message stack[PUSH_STACK];
    tidemark_message *ms = stack;
    size_t cap = PUSH_STACK, n = 0;
    ERL_NIF_TERM list = argv[1], head, ret;
    while (enif_get_list_cell(env, list, &head, &list)) {
        if (n == cap) {
            if (normal && n >= DIRTY_ITEMS) {
                ret = enif_schedule_nif(env, "buffer_push_many_dirty",
                                        ERL_NIF_DIRTY_JOB_CPU_BOUND, push_many_impl, argc, argv);
                goto out;
            }
            /* A normal scheduler reads at most DIRTY_ITEMS before going dirty (no walk of a
             * long list here); a dirty one sizes the array for the whole list. */
            size_t ncap = DIRTY_ITEMS;
            if (!normal) {
                unsigned rest;
                if (!enif_get_list_length(env, list, &rest)) {
                    ret = enif_make_badarg(env);
                    goto out;
                }
                ncap = n + 1 + rest;
            }
            tidemark_message *big = enif_alloc(sizeof *big * ncap);
            if (!big) {
                ret = error_tuple(env, a_enomem);
                goto out;
            }
            memcpy(big, ms, sizeof *ms * n);
            if (ms != stack)
                enif_free(ms);
            ms = big;
            cap = ncap;
        }
        if (!get_message(env, head, &ms[n])) {
            ret = enif_make_badarg(env);
            goto out;
        }
        n++;
    }
    if (!enif_is_empty_list(env, list)) {
        ret = enif_make_badarg(env);
        goto out;
    }
    size_t accepted = 0;
    tidemark_status refusal = TIDEMARK_STATUS_OK;
    tidemark_status s = BUFFER_CALL(
        env, tidemark_batch_buffer_push_many(br->b, n ? ms : NULL, n, &accepted, &refusal));
    if (s != TIDEMARK_STATUS_OK)
        ret = ok_or_error(env, s);
    else if (refusal == TIDEMARK_STATUS_OK)
        ret = ok_tuple(env, enif_make_uint64(env, accepted));
    else
        ret = enif_make_tuple3(env, a_error, status_atom(refusal), enif_make_uint64(env, accepted));
out:
    if (ms != stack)
        enif_free(ms);
    return ret;
}

static ERL_NIF_TERM nif_buffer_push_many(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    return push_many_impl(env, argc, argv);
}

/* {:ok, {batch_ref, id, [{payload, offset | nil}], highest_offset | nil, trigger}} built from
 * a batch resource whose handle is still owned by it: the batch's borrowed view
 * (tidemark_batch_get_view) copied once into one new binary, each payload a sub-binary of it. */
static ERL_NIF_TERM build_batch(ErlNifEnv *env, batch_res *b, ERL_NIF_TERM bterm,
                                const tidemark_batch_summary *known) {
    tidemark_batch *batch = atomic_load(&b->batch);
    tidemark_batch_summary sum;
    tidemark_status s = TIDEMARK_STATUS_OK;
    if (known)
        sum = *known;
    else
        s = tidemark_batch_info(batch, &sum);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    tidemark_batch_view view;
    s = tidemark_batch_get_view(batch, &view);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    ERL_NIF_TERM whole;
    unsigned char *dst = enif_make_new_binary(env, view.payload_len, &whole);
    if (!dst)
        return error_tuple(env, a_enomem);
    if (view.payload_len > 0)
        memcpy(dst, view.payload, view.payload_len);
    size_t pos = view.payload_len;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = view.len; i-- > 0;) {
        const tidemark_msg_desc *d = &view.descs[i];
        if (d->len > pos) /* the view's lengths must add up to payload_len */
            return error_tuple(env, status_atoms[TIDEMARK_STATUS_INVALID_ARGUMENT]);
        pos -= (size_t)d->len;
        ERL_NIF_TERM msg[2] = {
            enif_make_sub_binary(env, whole, pos, (size_t)d->len),
            d->has_offset ? make_offset(env, d->offset) : a_nil,
        };
        list = enif_make_list_cell(env, enif_make_tuple_from_array(env, msg, 2), list);
    }
    ERL_NIF_TERM info[] = {
        bterm,
        enif_make_uint64(env, sum.id),
        list,
        sum.has_offset ? make_offset(env, sum.highest_offset) : a_nil,
        trigger_atom(sum.trigger),
    };
    return ok_tuple(env, enif_make_tuple_from_array(env, info, 5));
}

static ERL_NIF_TERM build_batch_dirty(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    void *p;
    if (!enif_get_resource(env, argv[0], BATCH_RT, &p))
        return enif_make_badarg(env);
    return build_batch(env, p, argv[0], NULL);
}

/* Wraps a batch handle just taken by a poll and converts it (on a dirty CPU scheduler when
 * large). */
static ERL_NIF_TERM batch_result(ErlNifEnv *env, buffer_res *br, tidemark_batch *batch) {
    batch_res *b = enif_alloc_resource(BATCH_RT, sizeof *b);
    atomic_init(&b->batch, batch);
    b->buf = br;
    enif_keep_resource(br);
    ERL_NIF_TERM bterm = enif_make_resource(env, b);
    enif_release_resource(b);
    tidemark_batch_summary sum;
    tidemark_status s = tidemark_batch_info(batch, &sum);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    if (sum.len > DIRTY_BATCH_MESSAGES || sum.bytes > DIRTY_BATCH_BYTES) {
        ERL_NIF_TERM args[] = {bterm};
        return enif_schedule_nif(env, "buffer_build_batch_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 build_batch_dirty, 1, args);
    }
    return build_batch(env, b, bterm, &sum);
}

static ERL_NIF_TERM wait_term(ErlNifEnv *env, uint64_t wait_us) {
    return wait_us == UINT64_MAX ? a_infinity : enif_make_uint64(env, wait_us);
}

/* {:ok, batch_tuple} | {:would_block, wait_us | :infinity} | {:error, :closed} */
static ERL_NIF_TERM nif_buffer_poll_batch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    tidemark_batch *batch = NULL;
    uint64_t wait_us = 0;
    tidemark_status s =
        BUFFER_CALL(env, tidemark_batch_buffer_poll_batch(br->b, &batch, &wait_us));
    if (s == TIDEMARK_STATUS_WOULD_BLOCK)
        return enif_make_tuple2(env, a_would_block, wait_term(env, wait_us));
    if (s == TIDEMARK_STATUS_CLOSED)
        ping_stop_watchers(env, br);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    return batch_result(env, br, batch);
}

/* buffer_subscribe(buffer, pid | nil): the process buffer_notify tells to poll (nil: none).
 * Registers the callback with the library at the first subscribe. */
static ERL_NIF_TERM nif_buffer_subscribe(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    ErlNifPid pid;
    bool has = !enif_is_identical(argv[1], a_nil);
    if (has && !enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);
    enif_mutex_lock(br->lock);
    bool set = br->notify_set;
    enif_mutex_unlock(br->lock);
    if (!set) {
        /* Registered before anyone can poll armed (poll_batch_notify requires notify_set):
         * an arming with no callback in place would be a lost wake-up. Two first subscribes
         * racing both register the same callback, which is harmless. */
        tidemark_status s = tidemark_batch_buffer_set_notify(br->b, buffer_notify, br);
        if (s != TIDEMARK_STATUS_OK)
            return ok_or_error(env, s);
    }
    enif_mutex_lock(br->lock);
    br->notify_set = true;
    br->has_sub = has;
    if (has)
        br->sub = pid;
    enif_mutex_unlock(br->lock);
    return a_ok;
}

/* {:ok, batch_tuple} | {:would_block, wait_us | :infinity, serial, subscriber_pid} |
 * {:error, :closed} | {:error, :no_subscriber}. On WOULD_BLOCK the library armed the callback
 * (one {:tidemark_batch_ready, buffer} when a batch becomes due); the linger deadline is the
 * wait, which BatchBuffer.poll_batch_notify/1 turns into a timer to the subscriber. */
static ERL_NIF_TERM nif_buffer_poll_batch_notify(ErlNifEnv *env, int argc,
                                                 const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    ErlNifPid pid;
    enif_mutex_lock(br->lock);
    bool has = br->has_sub && br->notify_set;
    if (has)
        pid = br->sub;
    enif_mutex_unlock(br->lock);
    if (!has)
        return error_tuple(env, a_no_subscriber);
    tidemark_batch *batch = NULL;
    uint64_t wait_us = 0;
    tidemark_status s =
        BUFFER_CALL(env, tidemark_batch_buffer_poll_batch_notify(br->b, &batch, &wait_us));
    if (s == TIDEMARK_STATUS_WOULD_BLOCK) {
        ERL_NIF_TERM t[] = {a_would_block, wait_term(env, wait_us),
                            enif_make_uint64(env, br->serial), enif_make_pid(env, &pid)};
        return enif_make_tuple_from_array(env, t, 4);
    }
    if (s == TIDEMARK_STATUS_CLOSED)
        ping_stop_watchers(env, br);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    return batch_result(env, br, batch);
}

static ERL_NIF_TERM settle(ErlNifEnv *env, const ERL_NIF_TERM argv[], int requeue) {
    buffer_res *br = get_buffer(env, argv[0]);
    void *p;
    if (!br || !enif_get_resource(env, argv[1], BATCH_RT, &p))
        return enif_make_badarg(env);
    batch_res *b = p;
    /* Consume the handle exactly once, even under racing acks. */
    tidemark_batch *batch = atomic_exchange(&b->batch, NULL);
    if (!batch)
        return error_tuple(env, status_atoms[TIDEMARK_STATUS_NOT_IN_FLIGHT]);
    tidemark_status s =
        requeue < 0 ? BUFFER_CALL(env, tidemark_batch_buffer_ack(br->b, batch))
                    : BUFFER_CALL(env, tidemark_batch_buffer_nack(br->b, batch, requeue > 0));
    if (s == TIDEMARK_STATUS_NULL_ARGUMENT || s == TIDEMARK_STATUS_INVALID_HANDLE)
        tidemark_batch_free(batch); /* not consumed by the call */
    /* An ack or nack can finish a stop: its watchers look again. */
    ping_stop_watchers(env, br);
    return ok_or_error(env, s);
}

static ERL_NIF_TERM nif_buffer_ack(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    return settle(env, argv, -1);
}

static ERL_NIF_TERM nif_buffer_nack(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    if (!enif_is_identical(argv[2], a_true) && !enif_is_identical(argv[2], a_false))
        return enif_make_badarg(env);
    return settle(env, argv, enif_is_identical(argv[2], a_true) ? 1 : 0);
}

/* Registered twice: normal scheduler (timeout 0: only marks) and dirty IO (waits). */
static ERL_NIF_TERM nif_buffer_flush(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    uint64_t timeout;
    if (!get_u64(env, argv[1], &timeout))
        return enif_make_badarg(env);
    if (timeout > 0 && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
        return enif_make_badarg(env); /* a waiting flush must use the dirty entry */
    return ok_or_error(env, BUFFER_CALL(env, tidemark_batch_buffer_flush(br->b, timeout)));
}

/* The stop report as a map (see BatchBuffer.stop/2), built in `env`; the report stays the
 * caller's. 0 on failure (*out is then an error term). */
static int report_term(ErlNifEnv *env, const tidemark_stop_report *r, ERL_NIF_TERM *out) {
    tidemark_stop_counts c;
    tidemark_status s = tidemark_stop_report_counts(r, &c);
    if (s != TIDEMARK_STATUS_OK) {
        *out = ok_or_error(env, s);
        return 0;
    }
    /* Handed-back messages, in order, copied out page by page, three ways over the same
     * binaries: `handed_back` ({payload, offset | nil, outcome_unknown?}, the shape since the
     * first release), `handed_back_messages` ({payload, offset | nil}, the shape of a batch's
     * messages: push_many takes them back as they are) and the parallel `outcome_unknown`. */
    size_t cap = c.handed_back ? c.handed_back : 1;
    ERL_NIF_TERM *items = enif_alloc(sizeof(ERL_NIF_TERM) * cap * 3);
    if (!items) {
        *out = error_tuple(env, a_enomem);
        return 0;
    }
    ERL_NIF_TERM *msgs = items + cap;
    ERL_NIF_TERM *unknown = items + 2 * cap;
    tidemark_handed_back page[256];
    size_t start = 0, got;
    do {
        got = 0;
        s = tidemark_stop_report_handed_back(r, start, page, 256, &got);
        if (s != TIDEMARK_STATUS_OK)
            break;
        for (size_t i = 0; i < got && start + i < c.handed_back; i++) {
            ERL_NIF_TERM bin;
            unsigned char *d = enif_make_new_binary(env, page[i].message.len, &bin);
            if (page[i].message.len)
                memcpy(d, page[i].message.data, page[i].message.len);
            ERL_NIF_TERM off =
                page[i].message.has_offset ? make_offset(env, page[i].message.offset) : a_nil;
            ERL_NIF_TERM unk = make_bool(page[i].outcome_unknown);
            items[start + i] = enif_make_tuple3(env, bin, off, unk);
            msgs[start + i] = enif_make_tuple2(env, bin, off);
            unknown[start + i] = unk;
        }
        start += got;
    } while (got == 256 && start < c.handed_back);
    if (s != TIDEMARK_STATUS_OK) {
        enif_free(items);
        *out = ok_or_error(env, s);
        return 0;
    }
    ERL_NIF_TERM list = enif_make_list_from_array(env, items, (unsigned)start);
    ERL_NIF_TERM msg_list = enif_make_list_from_array(env, msgs, (unsigned)start);
    ERL_NIF_TERM unknown_list = enif_make_list_from_array(env, unknown, (unsigned)start);
    enif_free(items);
    static const char *const keys[] = {"accepted",          "delivered",       "failed",
                                       "handed_back",       "in_flight_unknown",
                                       "unknown_batches",   "timed_out",       "handed_back_count",
                                       "handed_back_messages", "outcome_unknown"};
    ERL_NIF_TERM vals[] = {
        enif_make_uint64(env, c.accepted),          enif_make_uint64(env, c.delivered),
        enif_make_uint64(env, c.failed),            list,
        enif_make_uint64(env, c.in_flight_unknown), enif_make_uint64(env, c.unknown_batches),
        make_bool(c.timed_out),                     enif_make_uint64(env, c.handed_back),
        msg_list,                                   unknown_list,
    };
    *out = make_map(env, keys, vals, 10);
    return 1;
}

/* Dirty IO: waits up to the deadline for the sink, then returns the report. */
static ERL_NIF_TERM nif_buffer_stop(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    uint64_t timeout;
    if (!get_u64(env, argv[1], &timeout))
        return enif_make_badarg(env);
    tidemark_stop_report *r = NULL;
    tidemark_status s = BUFFER_CALL(env, tidemark_batch_buffer_stop(br->b, timeout, &r));
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    ping_stop_watchers(env, br);
    ERL_NIF_TERM term;
    int ok = report_term(env, r, &term);
    tidemark_stop_report_free(r);
    return ok ? ok_tuple(env, term) : term;
}

/* buffer_begin_stop(buffer, timeout_ms): closes admission and starts the drain, never
 * waiting (the earliest deadline of several stops wins). */
static ERL_NIF_TERM nif_buffer_begin_stop(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    uint64_t timeout;
    if (!get_u64(env, argv[1], &timeout))
        return enif_make_badarg(env);
    return ok_or_error(env, BUFFER_CALL(env, tidemark_batch_buffer_begin_stop(br->b, timeout)));
}

/* buffer_stop_watch(buffer, pid, true | false): adds or removes a stop watcher (see
 * ping_stop_watchers). */
static ERL_NIF_TERM nif_buffer_stop_watch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    ErlNifPid pid;
    if (!enif_get_local_pid(env, argv[1], &pid) ||
        (!enif_is_identical(argv[2], a_true) && !enif_is_identical(argv[2], a_false)))
        return enif_make_badarg(env);
    bool add = enif_is_identical(argv[2], a_true);
    ERL_NIF_TERM ret = a_ok;
    enif_mutex_lock(br->lock);
    if (add) {
        if (br->nwatch == br->capwatch) {
            size_t cap = br->capwatch ? br->capwatch * 2 : 4;
            ErlNifPid *w = br->watchers ? enif_realloc(br->watchers, sizeof *w * cap)
                                        : enif_alloc(sizeof *w * cap);
            if (!w) {
                ret = error_tuple(env, a_enomem);
                goto out;
            }
            br->watchers = w;
            br->capwatch = cap;
        }
        br->watchers[br->nwatch++] = pid;
    } else {
        for (size_t i = 0; i < br->nwatch; i++) {
            if (enif_compare_pids(&br->watchers[i], &pid) == 0) {
                br->watchers[i] = br->watchers[--br->nwatch];
                break;
            }
        }
    }
    atomic_store_explicit(&br->nwatch_hint, br->nwatch, memory_order_seq_cst);
out:
    enif_mutex_unlock(br->lock);
    return ret;
}

static ERL_NIF_TERM poll_stop_send_impl(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

/* buffer_poll_stop_send(buffer, pid, ref): :would_block while the stop drains (or none began);
 * once it finished, sends {:tidemark_stopped, ref, report} to `pid` (built in the message's own
 * env: nothing is copied by the send) and returns :ok. A report with many handed-back
 * messages is built on a dirty CPU scheduler. */
static ERL_NIF_TERM nif_buffer_poll_stop_send(ErlNifEnv *env, int argc,
                                              const ERL_NIF_TERM argv[]) {
    BUFFER_ARG(br);
    ErlNifPid pid;
    if (!enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);
    tidemark_stop_report *r = NULL;
    tidemark_status s = BUFFER_CALL(env, tidemark_batch_buffer_poll_stop(br->b, &r));
    if (s == TIDEMARK_STATUS_WOULD_BLOCK)
        return a_would_block;
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    tidemark_stop_counts c;
    s = tidemark_stop_report_counts(r, &c);
    tidemark_stop_report_free(r);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    if (c.handed_back > DIRTY_ITEMS)
        return enif_schedule_nif(env, "buffer_poll_stop_send_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 poll_stop_send_impl, argc, argv);
    return poll_stop_send_impl(env, argc, argv);
}

static ERL_NIF_TERM poll_stop_send_impl(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    ErlNifPid pid;
    if (!enif_get_local_pid(env, argv[1], &pid))
        return enif_make_badarg(env);
    /* The stop finished: every poll_stop returns its report from now on. */
    tidemark_stop_report *r = NULL;
    tidemark_status s = BUFFER_CALL(env, tidemark_batch_buffer_poll_stop(br->b, &r));
    if (s == TIDEMARK_STATUS_WOULD_BLOCK)
        return a_would_block;
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    ErlNifEnv *m = enif_alloc_env();
    if (!m) {
        tidemark_stop_report_free(r);
        return error_tuple(env, a_enomem);
    }
    ERL_NIF_TERM term;
    int ok = report_term(m, r, &term);
    tidemark_stop_report_free(r);
    if (!ok) {
        enif_free_env(m);
        return error_tuple(env, a_enomem);
    }
    ERL_NIF_TERM msg = enif_make_tuple3(m, a_tidemark_stopped, enif_make_copy(m, argv[2]), term);
    enif_send(env, &pid, m, msg);
    enif_free_env(m);
    return a_ok;
}

static ERL_NIF_TERM nif_buffer_stats(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    BUFFER_ARG(br);
    tidemark_batch_buffer_counters c;
    tidemark_status s = tidemark_batch_buffer_stats(br->b, &c);
    if (s != TIDEMARK_STATUS_OK)
        return ok_or_error(env, s);
    static const char *const keys[] = {
        "accepted",    "rejected_full",   "rejected_stopping", "rejected_closed",
        "rejected_too_large", "batches",  "delivered",         "failed",
        "requeued",    "handed_back",     "queued_messages",   "queued_bytes",
        "in_flight_batches", "in_flight_messages", "link_errors",
    };
    uint64_t v[] = {c.accepted,          c.rejected_full,      c.rejected_stopping,
                    c.rejected_closed,   c.rejected_too_large, c.batches,
                    c.delivered,         c.failed,             c.requeued,
                    c.handed_back,       c.queued_messages,    c.queued_bytes,
                    c.in_flight_batches, c.in_flight_messages, c.link_errors};
    ERL_NIF_TERM vals[15];
    for (size_t i = 0; i < 15; i++)
        vals[i] = enif_make_uint64(env, v[i]);
    return ok_tuple(env, make_map(env, keys, vals, 15));
}

/* Test support: {os_thread_id, cpu_ns}: the calling scheduler thread and its CPU clock. The
 * CPU time a NIF call consumes on its scheduler thread is immune to the OS preempting that
 * thread (which a wall clock on a shared machine is not): see test/scheduler_safety_test.exs. */
static ERL_NIF_TERM nif_thread_clock(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return error_tuple(env, a_enomem);
    return enif_make_tuple2(env, enif_make_long(env, (long)syscall(SYS_gettid)),
                            enif_make_int64(env, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec));
}

static ERL_NIF_TERM nif_version(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_string(env, tidemark_version(), ERL_NIF_LATIN1);
}

/* ------------------------------------------------------------------------------------------ */
/* Load                                                                                        */

static int open_types(ErlNifEnv *env) {
    ErlNifResourceTypeInit tracker_init = {.dtor = tracker_dtor, .down = tracker_down};
    ErlNifResourceTypeInit writer_init = {.dtor = writer_dtor, .down = writer_down};
    ErlNifResourceTypeInit buffer_init = {.dtor = buffer_dtor};
    ErlNifResourceTypeInit batch_init = {.dtor = batch_dtor};
    ErlNifResourceFlags flags = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
    TRACKER_RT = enif_open_resource_type_x(env, "tidemark_tracker", &tracker_init, flags, NULL);
    WRITER_RT = enif_open_resource_type_x(env, "tidemark_writer", &writer_init, flags, NULL);
    BUFFER_RT = enif_open_resource_type_x(env, "tidemark_buffer", &buffer_init, flags, NULL);
    BATCH_RT = enif_open_resource_type_x(env, "tidemark_batch", &batch_init, flags, NULL);
    return TRACKER_RT && WRITER_RT && BUFFER_RT && BATCH_RT ? 0 : -1;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)priv;
    (void)info;
    init_atoms(env);
    return open_types(env);
}

static int upgrade(ErlNifEnv *env, void **priv, void **old_priv, ERL_NIF_TERM info) {
    (void)priv;
    (void)old_priv;
    (void)info;
    init_atoms(env);
    return open_types(env);
}

static ErlNifFunc funcs[] = {
    {"version", 0, nif_version, 0},
    {"thread_clock", 0, nif_thread_clock, 0},
    {"tracker_new", 8, nif_tracker_new, 0},
    {"tracker_close", 1, nif_tracker_close, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"tracker_register", 3, nif_tracker_register, 0},
    {"tracker_unregister", 2, nif_tracker_unregister, 0},
    {"tracker_down", 3, nif_tracker_down, 0},
    {"tracker_writer_status", 2, nif_tracker_writer_status, 0},
    {"tracker_commit", 3, nif_tracker_commit, 0},
    {"tracker_flushed", 3, nif_tracker_flushed, 0},
    {"tracker_flushed_many", 2, nif_tracker_flushed_many, 0},
    {"tracker_remove", 2, nif_tracker_remove, 0},
    {"tracker_touch", 2, nif_tracker_touch, 0},
    {"tracker_pause", 2, nif_tracker_pause, 0},
    {"tracker_resume", 2, nif_tracker_resume, 0},
    {"tracker_sweep", 1, nif_tracker_sweep, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"tracker_ack", 1, nif_tracker_ack, 0},
    {"tracker_pinning", 1, nif_tracker_pinning, 0},
    {"tracker_stats", 1, nif_tracker_stats, 0},
    {"tracker_take_events", 1, nif_tracker_take_events, 0},
    {"tracker_work_stats", 1, nif_tracker_work_stats, 0},
    {"tracker_set_call_budget", 2, nif_tracker_set_call_budget, 0},
    {"tracker_run_backlog", 1, nif_tracker_run_backlog, 0},
    {"tracker_has_backlog", 1, nif_tracker_has_backlog, 0},
    {"buffer_new", 6, nif_buffer_new, 0},
    {"buffer_push", 2, nif_buffer_push, 0},
    {"buffer_push_many", 2, nif_buffer_push_many, 0},
    {"buffer_poll_batch", 1, nif_buffer_poll_batch, 0},
    {"buffer_ack", 2, nif_buffer_ack, 0},
    {"buffer_nack", 3, nif_buffer_nack, 0},
    {"buffer_flush", 2, nif_buffer_flush, 0},
    {"buffer_flush_wait", 2, nif_buffer_flush, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"buffer_stop", 2, nif_buffer_stop, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"buffer_subscribe", 2, nif_buffer_subscribe, 0},
    {"buffer_poll_batch_notify", 1, nif_buffer_poll_batch_notify, 0},
    {"buffer_begin_stop", 2, nif_buffer_begin_stop, 0},
    {"buffer_stop_watch", 3, nif_buffer_stop_watch, 0},
    {"buffer_poll_stop_send", 3, nif_buffer_poll_stop_send, 0},
    {"buffer_stats", 1, nif_buffer_stats, 0},
};

ERL_NIF_INIT(Elixir.Tidemark.Native, funcs, load, NULL, upgrade, NULL)
