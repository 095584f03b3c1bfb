defmodule Tidemark.Native do
  @moduledoc false
  # The one stub module of the NIF (c_src/tidemark_nif.c). Use Tidemark.Tracker and
  # Tidemark.BatchBuffer instead: they validate options and shape results.
  #
  # Scheduling: every function runs on a normal scheduler in well under 1 ms, except
  # tracker_sweep/1 and tracker_close/1 (dirty CPU), buffer_flush_wait/2 and buffer_stop/2
  # (dirty IO: they wait for the sink), and, rescheduling themselves onto a dirty CPU
  # scheduler: commit / flushed_many / push_many calls with more than 1000 items, batches above
  # 4096 messages or 512 KiB, tracker_new with more than 8192 expected writers, and the
  # tracker_register calls that may grow the library's writer table.
  #
  # Bounded work: the library examines at most `call_budget` deliveries per call and leaves a
  # backlog beyond that. Every tracker function that can run the log (commit, flushed,
  # flushed_many, remove, down, unregister, touch, pause, resume, take_events, sweep) checks for
  # a backlog before returning and, when one is left, continues it on a dirty CPU scheduler
  # (enif_schedule_nif) until it is done, then returns its own result. tracker_run_backlog/1 is
  # one budgeted step on the calling scheduler.

  @on_load :load_nif

  def load_nif do
    path = :filename.join(:code.priv_dir(:tidemark), ~c"tidemark_nif")
    :erlang.load_nif(path, 0)
  end

  def version, do: :erlang.nif_error(:nif_not_loaded)
  # Bench support: {os_thread_id, cpu_ns} of the calling scheduler thread.
  def thread_clock, do: :erlang.nif_error(:nif_not_loaded)

  def tracker_new(_grace_ms, _initial_ack, _subscriber, _owner, _max_writers, _expected, _events),
    do: :erlang.nif_error(:nif_not_loaded)

  def tracker_close(_t), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_register(_t, _pid, _class), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_unregister(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_down(_t, _w, _class), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_writer_status(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_commit(_t, _offset, _writers), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_flushed(_t, _w, _offset), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_flushed_many(_t, _reports), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_remove(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_touch(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_pause(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_resume(_t, _w), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_sweep(_t), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_ack(_t), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_pinning(_t), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_stats(_t), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_take_events(_t), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_work_stats(_t), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_set_call_budget(_t, _deliveries), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_run_backlog(_t), do: :erlang.nif_error(:nif_not_loaded)
  def tracker_has_backlog(_t), do: :erlang.nif_error(:nif_not_loaded)

  def buffer_new(_max_messages, _max_bytes, _linger_us, _cap_messages, _cap_bytes, _inflight),
    do: :erlang.nif_error(:nif_not_loaded)

  def buffer_push(_b, _message), do: :erlang.nif_error(:nif_not_loaded)
  def buffer_push_many(_b, _messages), do: :erlang.nif_error(:nif_not_loaded)
  def buffer_poll_batch(_b), do: :erlang.nif_error(:nif_not_loaded)
  def buffer_ack(_b, _batch), do: :erlang.nif_error(:nif_not_loaded)
  def buffer_nack(_b, _batch, _requeue), do: :erlang.nif_error(:nif_not_loaded)
  def buffer_flush(_b, _timeout_ms), do: :erlang.nif_error(:nif_not_loaded)
  def buffer_flush_wait(_b, _timeout_ms), do: :erlang.nif_error(:nif_not_loaded)
  def buffer_stop(_b, _timeout_ms), do: :erlang.nif_error(:nif_not_loaded)
  def buffer_stats(_b), do: :erlang.nif_error(:nif_not_loaded)
end
