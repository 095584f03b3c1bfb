defmodule Tidemark.Native do
  @moduledoc false
  # The one stub module of the NIF (c_src/tidemark_nif.c). Use Tidemark.Tracker and
  # Tidemark.BatchBuffer instead: they validate options and shape results.
  #
  # Scheduling: every function runs on a normal scheduler in well under 1 ms, except
  # tracker_sweep/1 and tracker_close/1 (dirty CPU), buffer_flush_wait/2 and buffer_stop/2
  # (dirty IO: they wait for the sink), and, rescheduling themselves onto a dirty CPU
  # scheduler: commit / flushed_many / push_many calls with more than 1000 items, batches above
  # 4096 messages or 512 KiB, stop reports sent by buffer_poll_stop_send with more than 1000
  # handed-back messages, tracker_new with more than 8192 expected writers, and a
  # tracker_register that needs the library to allocate writer slots (it tries
  # tidemark_tracker_register_if_allocated first, on the normal scheduler, and moves to a dirty
  # CPU scheduler for the allocating register only when that returns WOULD_BLOCK).
  #
  # Bounded work: the library examines at most `call_budget` deliveries per call and leaves a
  # backlog beyond that. Every tracker function that can run the log (commit, flushed,
  # flushed_many, remove, down, unregister, touch, pause, resume, take_events, sweep) checks for
  # a backlog before returning and, when one is left, continues it on a dirty CPU scheduler
  # (enif_schedule_nif) until it is done, then returns its own result. tracker_run_backlog/1 is
  # one budgeted step on the calling scheduler.

  @on_load :load_nif

  @typep tracker :: reference()
  @typep buffer :: reference()
  @typep batch_ref :: reference()
  @typep writer :: non_neg_integer()
  @typep offset :: {non_neg_integer(), non_neg_integer()}
  @typep class :: :crash | :cleanup | :teardown
  @typep opt_int :: non_neg_integer() | nil
  @typep result :: :ok | {:error, atom()}
  @typep result(v) :: {:ok, v} | {:error, atom()}
  @typep message :: binary() | {binary(), offset() | nil}
  @typep event ::
           {:challenge, writer()}
           | {:challenged, writer()}
           | {:evicted, writer(), :crashed | :orphaned | :stalled}
           | {:removed, writer()}
  @typep batch_tuple ::
           {batch_ref(), non_neg_integer(), [{binary(), offset() | nil}], offset() | nil,
            :count | :bytes | :linger | :flush | :stop}

  @spec load_nif() :: :ok | {:error, {atom(), charlist()}}
  def load_nif do
    path = :filename.join(:code.priv_dir(:tidemark), ~c"tidemark_nif")
    :erlang.load_nif(path, 0)
  end

  @spec version() :: charlist()
  def version, do: :erlang.nif_error(:nif_not_loaded)
  # Bench support: {os_thread_id, cpu_ns} of the calling scheduler thread.
  @spec thread_clock() :: {integer(), integer()} | {:error, atom()}
  def thread_clock, do: :erlang.nif_error(:nif_not_loaded)

  # The last argument is the event shape (Tracker.new/1's `:events`): :legacy (the default,
  # the messages and take_events terms of the first release) or :unified.
  @spec tracker_new(
          opt_int(),
          opt_int(),
          pid() | nil,
          pid(),
          opt_int(),
          opt_int(),
          opt_int(),
          :legacy | :unified
        ) :: result(tracker())
  def tracker_new(
        _stall_grace_ms,
        _initial_ack,
        _subscriber,
        _owner,
        _max_writers,
        _expected,
        _events,
        _shape
      ),
      do: :erlang.nif_error(:nif_not_loaded)

  # The arity of the first release (legacy event shapes).
  @spec tracker_new(opt_int(), opt_int(), pid() | nil, pid(), opt_int(), opt_int(), opt_int()) ::
          result(tracker())
  def tracker_new(stall_grace_ms, initial_ack, subscriber, owner, max_writers, expected, events),
    do:
      tracker_new(
        stall_grace_ms,
        initial_ack,
        subscriber,
        owner,
        max_writers,
        expected,
        events,
        :legacy
      )

  @spec tracker_close(tracker()) :: :ok
  def tracker_close(_t), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_register(tracker(), pid(), class()) :: result(writer())
  def tracker_register(_t, _pid, _class), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_unregister(tracker(), writer()) :: result()
  def tracker_unregister(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_down(tracker(), writer(), class()) :: result()
  def tracker_down(_t, _w, _class), do: :erlang.nif_error(:nif_not_loaded)

  @spec tracker_writer_status(tracker(), writer()) ::
          result(:idle | :pending | :orphaned | {:evicted, :crashed | :orphaned | :stalled})
  def tracker_writer_status(_t, _w), do: :erlang.nif_error(:nif_not_loaded)

  @spec tracker_commit(tracker(), offset(), [writer()]) :: result()
  def tracker_commit(_t, _offset, _writers), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_flushed(tracker(), writer(), offset()) :: result()
  def tracker_flushed(_t, _w, _offset), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_flushed_many(tracker(), [{writer(), offset()}]) :: result([{writer(), atom()}])
  def tracker_flushed_many(_t, _reports), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_remove(tracker(), writer()) :: result()
  def tracker_remove(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_touch(tracker(), writer()) :: result()
  def tracker_touch(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_pause(tracker(), writer()) :: result()
  def tracker_pause(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_resume(tracker(), writer()) :: result()
  def tracker_resume(_t, _w), do: :erlang.nif_error(:nif_not_loaded)

  @spec tracker_sweep(tracker()) ::
          result(%{challenged: non_neg_integer(), evicted: non_neg_integer()})
  def tracker_sweep(_t), do: :erlang.nif_error(:nif_not_loaded)

  @spec tracker_ack(tracker()) :: result(non_neg_integer())
  def tracker_ack(_t), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_pinning(tracker()) :: result(map())
  def tracker_pinning(_t), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_stats(tracker()) :: result(map())
  def tracker_stats(_t), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_take_events(tracker()) :: result([event()])
  def tracker_take_events(_t), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_work_stats(tracker()) :: result(map())
  def tracker_work_stats(_t), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_set_call_budget(tracker(), non_neg_integer()) :: result()
  def tracker_set_call_budget(_t, _deliveries), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_run_backlog(tracker()) :: result(boolean())
  def tracker_run_backlog(_t), do: :erlang.nif_error(:nif_not_loaded)
  @spec tracker_has_backlog(tracker()) :: result(boolean())
  def tracker_has_backlog(_t), do: :erlang.nif_error(:nif_not_loaded)

  @spec buffer_new(opt_int(), opt_int(), opt_int(), opt_int(), opt_int(), opt_int()) ::
          result(buffer())
  def buffer_new(_max_messages, _max_bytes, _linger_us, _cap_messages, _cap_bytes, _inflight),
    do: :erlang.nif_error(:nif_not_loaded)

  @spec buffer_push(buffer(), message()) :: result()
  def buffer_push(_b, _message), do: :erlang.nif_error(:nif_not_loaded)

  @spec buffer_push_many(buffer(), [message()]) ::
          {:ok, non_neg_integer()} | {:error, atom(), non_neg_integer()} | {:error, atom()}
  def buffer_push_many(_b, _messages), do: :erlang.nif_error(:nif_not_loaded)

  @spec buffer_poll_batch(buffer()) ::
          {:ok, batch_tuple()} | {:would_block, non_neg_integer() | :infinity} | {:error, atom()}
  def buffer_poll_batch(_b), do: :erlang.nif_error(:nif_not_loaded)

  @spec buffer_ack(buffer(), batch_ref()) :: result()
  def buffer_ack(_b, _batch), do: :erlang.nif_error(:nif_not_loaded)
  @spec buffer_nack(buffer(), batch_ref(), boolean()) :: result()
  def buffer_nack(_b, _batch, _requeue), do: :erlang.nif_error(:nif_not_loaded)
  @spec buffer_flush(buffer(), 0) :: result()
  def buffer_flush(_b, _timeout_ms), do: :erlang.nif_error(:nif_not_loaded)
  @spec buffer_flush_wait(buffer(), non_neg_integer()) :: result()
  def buffer_flush_wait(_b, _timeout_ms), do: :erlang.nif_error(:nif_not_loaded)
  @spec buffer_stop(buffer(), non_neg_integer()) :: result(map())
  def buffer_stop(_b, _timeout_ms), do: :erlang.nif_error(:nif_not_loaded)
  @spec buffer_stats(buffer()) :: result(map())
  def buffer_stats(_b), do: :erlang.nif_error(:nif_not_loaded)

  # Sink notification: the library calls back (on the thread of the push, ack or stop that made
  # a batch due) and the NIF sends {:tidemark_batch_ready, buffer} to the subscriber.
  @spec buffer_subscribe(buffer(), pid() | nil) :: result()
  def buffer_subscribe(_b, _pid), do: :erlang.nif_error(:nif_not_loaded)

  @spec buffer_poll_batch_notify(buffer()) ::
          {:ok, batch_tuple()}
          | {:would_block, non_neg_integer() | :infinity, pos_integer(), pid()}
          | {:error, atom()}
  def buffer_poll_batch_notify(_b), do: :erlang.nif_error(:nif_not_loaded)

  # Asynchronous stop: begin_stop closes admission without waiting; a watcher process (added
  # with stop_watch) receives {:tidemark_stop_progress, buffer} after every ack, nack, close or
  # stop, and calls poll_stop_send, which sends {:tidemark_stopped, ref, report} to `pid` once
  # the stop finished (a large report is built on a dirty CPU scheduler).
  @spec buffer_begin_stop(buffer(), non_neg_integer()) :: result()
  def buffer_begin_stop(_b, _timeout_ms), do: :erlang.nif_error(:nif_not_loaded)
  @spec buffer_stop_watch(buffer(), pid(), boolean()) :: result()
  def buffer_stop_watch(_b, _pid, _add), do: :erlang.nif_error(:nif_not_loaded)

  @spec buffer_poll_stop_send(buffer(), pid(), reference()) ::
          :ok | :would_block | {:error, atom()}
  def buffer_poll_stop_send(_b, _pid, _ref), do: :erlang.nif_error(:nif_not_loaded)
end
