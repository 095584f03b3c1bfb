# The docs/CONTRACT.md §8 workload through the NIF, next to the pure-Elixir reference algorithm
# (bench/reference_tracker.ex), in the same run: writers drawn uniformly from N, 4 distinct
# writers per commit, each commit's writers report it flushed 64 commits later. A writer-op is
# one delivery plus its flush report.
#
#   mix run bench/tracker.exs            # N = 10^4 and 3·10^5, 100 000 commits, 3 rounds
#   mix run bench/tracker.exs --quick    # smoke: N = 10^4, 10 000 commits, 1 round
#
# The workload is generated up front (same steps, same writer ids for every implementation), so
# only the tracker calls are timed. Rounds are interleaved; the median is reported.
#
# Then two reports the tests deliberately do not make (they count work instead of timing it,
# test/scheduler_safety_test.exs):
#
#   * per-call cost: every NIF kind called 100 000 times (--quick: 10 000) from a high-priority
#     process, thread CPU time of the calling scheduler thread around each call (p50, p99,
#     p99.9, max; calls that migrated between threads are left out and counted) and the wall max.
#     On these VMs a thread's CPU clock also counts interrupt and VM-exit time, so the maxima
#     are noisy: a figure to read, not a limit;
#   * worst-case release: a head pinned while 10^6 deliveries (--quick: 10^5) finish behind it,
#     then released by one flushed/3: the call's wall time with the default budget (the backlog
#     continues on a dirty scheduler) and with an unbounded budget (everything on the normal
#     scheduler: what the budget prevents), plus the normal-scheduler work counted.

Code.require_file("reference_tracker.ex", __DIR__)

defmodule Tidemark.Bench.TrackerBench do
  import Bitwise

  alias Tidemark.Bench.ReferenceTracker, as: Ref
  alias Tidemark.Tracker

  @per_commit 4
  @lag 64
  @op 2

  def main(args) do
    quick = "--quick" in args
    sizes = if quick, do: [10_000], else: [10_000, 300_000]
    commits = if quick, do: 10_000, else: 100_000
    rounds = if quick, do: 1, else: 3

    IO.puts(
      "tidemark #{Tidemark.native_version()}, #{System.schedulers_online()} schedulers, " <>
        "OTP #{System.otp_release()}, Elixir #{System.version()}"
    )

    IO.puts("#{commits} commits per run, #{rounds} round(s), median ns per writer-op\n")

    IO.puts(
      "| N | reference (Elixir) | NIF flushed/3 | NIF flushed_many/2 | ref / NIF (best) | NIF ack exact |"
    )

    IO.puts("| --- | --- | --- | --- | --- | --- |")
    results = for n <- sizes, do: run_size(n, commits, rounds)

    calls = if quick, do: 10_000, else: 100_000
    per_call_cost(calls)
    release_cost(if(quick, do: 100_000, else: 1_000_000))

    failed = Enum.reject(results, & &1)
    if failed != [], do: System.halt(1)
  end

  defp run_size(n, commits, rounds) do
    holder = spawn(fn -> Process.sleep(:infinity) end)
    {:ok, t0} = Tracker.new(max_writers: n)
    # Writer ids come from a tracker registered like the measured ones (dense, same order), so
    # one step list serves every implementation.
    ids = for _ <- 1..n, do: elem(Tracker.register_writer(t0, holder), 1)
    ids = List.to_tuple(ids)
    steps = generate(n, commits, ids)
    ops = commits * @per_commit

    runs =
      for _round <- 1..rounds do
        ref_ns = time(fn -> run_ref(steps) end)
        {nif1_ns, exact1} = time_nif(n, holder, steps, commits, :single)
        {nif2_ns, exact2} = time_nif(n, holder, steps, commits, :many)
        {ref_ns / ops, nif1_ns / ops, nif2_ns / ops, exact1 and exact2}
      end

    ref = median(Enum.map(runs, &elem(&1, 0)))
    nif1 = median(Enum.map(runs, &elem(&1, 1)))
    nif2 = median(Enum.map(runs, &elem(&1, 2)))
    exact = Enum.all?(runs, &elem(&1, 3))
    best = min(nif1, nif2)

    IO.puts(
      "| #{n} | #{round(ref)} | #{round(nif1)} | #{round(nif2)} | " <>
        "**#{Float.round(ref / best, 2)}×** | #{if exact, do: "yes", else: "NO"} |"
    )

    Tracker.close(t0)
    exact
  end

  # Steps: {flush_offset | nil, flush_writers, commit_offset, commit_writers}, ids already mapped.
  defp generate(n, commits, ids) do
    :rand.seed(:exsss, {0x7469, 0x6465, 0x6D61})
    ring = :array.new(@lag)

    {steps, _} =
      Enum.map_reduce(0..(commits - 1), ring, fn i, ring ->
        ws = pick(n, [], ids)
        slot = rem(i, @lag)
        flush = if i >= @lag, do: {{i - @lag + 1, @op}, :array.get(slot, ring)}, else: nil
        {{flush, {i + 1, @op}, ws}, :array.set(slot, ws, ring)}
      end)

    steps
  end

  defp pick(_n, acc, _ids) when length(acc) == @per_commit, do: acc

  defp pick(n, acc, ids) do
    w = elem(ids, :rand.uniform(n) - 1)
    if w in acc, do: pick(n, acc, ids), else: pick(n, [w | acc], ids)
  end

  defp run_ref(steps) do
    Enum.reduce(steps, Ref.new(), fn
      {nil, off, ws}, s ->
        Ref.commit(s, off, ws)

      {{foff, fws}, off, ws}, s ->
        s = Enum.reduce(fws, s, fn w, s -> Ref.flushed(s, w, foff) end)
        Ref.commit(s, off, ws)
    end)
  end

  defp time_nif(n, holder, steps, commits, mode) do
    {:ok, t} = Tracker.new(max_writers: n, expected_writers: n)
    for _ <- 1..n, do: {:ok, _} = Tracker.register_writer(t, holder)

    ns =
      time(fn ->
        case mode do
          :single -> run_nif_single(t, steps)
          :many -> run_nif_many(t, steps)
        end
      end)

    # Exactness: after the last commit, every commit but the last 64 was flushed.
    {:ok, ack} = Tracker.ack(t)
    Tracker.close(t)
    {ns, ack == commits - @lag}
  end

  defp run_nif_single(t, steps) do
    Enum.each(steps, fn
      {nil, off, ws} ->
        :ok = Tracker.commit(t, off, ws)

      {{foff, fws}, off, ws} ->
        Enum.each(fws, fn w -> :ok = Tracker.flushed(t, w, foff) end)
        :ok = Tracker.commit(t, off, ws)
    end)
  end

  defp run_nif_many(t, steps) do
    Enum.each(steps, fn
      {nil, off, ws} ->
        :ok = Tracker.commit(t, off, ws)

      {{foff, fws}, off, ws} ->
        {:ok, []} = Tracker.flushed_many(t, Enum.map(fws, &{&1, foff}))
        :ok = Tracker.commit(t, off, ws)
    end)
  end

  defp time(fun) do
    :erlang.garbage_collect()
    t0 = :erlang.monotonic_time(:nanosecond)
    fun.()
    :erlang.monotonic_time(:nanosecond) - t0
  end

  # ---------------------------------------------------------------------------------------
  # Per-call cost

  alias Tidemark.{BatchBuffer, Native}

  # Runs `fun` in a high-priority process; returns its result.
  defp measured(fun) do
    task =
      Task.async(fn ->
        Process.flag(:priority, :high)
        fun.()
      end)

    Task.await(task, :infinity)
  end

  # Times one call: {result, cpu_ns | :migrated, wall_ns}; `acc` is an ETS bag of samples.
  defp timed(acc, kind, fun) do
    {tid0, c0} = Native.thread_clock()
    t0 = :erlang.monotonic_time(:nanosecond)
    result = fun.()
    wall = :erlang.monotonic_time(:nanosecond) - t0
    {tid1, c1} = Native.thread_clock()
    :ets.insert(acc, {kind, if(tid0 == tid1, do: c1 - c0, else: :migrated), wall})
    result
  end

  defp per_call_cost(calls) do
    IO.puts(
      "\nper-call cost: #{calls} calls of each kind, thread CPU ns of the calling scheduler"
    )

    IO.puts(
      "(dirty kinds: wall ns; the thread clock also counts interrupts: read, do not assert)\n"
    )

    IO.puts("| call | p50 | p99 | p99.9 | max | wall max | migrated |")
    IO.puts("| --- | --- | --- | --- | --- | --- | --- |")
    acc = :ets.new(:samples, [:duplicate_bag, :public])
    measured(fn -> tracker_calls(acc, calls) end)
    measured(fn -> buffer_calls(acc, calls) end)

    for kind <-
          [:register_writer, :commit, :flushed, :flushed_many, :remove, :touch, :pause] ++
            [:resume, :sweep, :ack, :pinning, :stats, :work_stats, :take_events] ++
            [:writer_status, :unregister, :push, :push_many, :poll_batch, :ack_or_nack] ++
            [:flush_nonblocking, :buffer_stats, :poll_empty] do
      samples = :ets.lookup(acc, kind)
      dirty = kind == :sweep
      walls = Enum.map(samples, &elem(&1, 2))

      cpus =
        if dirty,
          do: walls,
          else: for({_, c, _} <- samples, c != :migrated, do: c)

      migrated = if dirty, do: "(dirty)", else: length(samples) - length(cpus)
      sorted = Enum.sort(cpus)
      pct = fn q -> Enum.at(sorted, min(length(sorted) - 1, trunc(length(sorted) * q))) end

      IO.puts(
        "| #{kind} | #{pct.(0.5)} | #{pct.(0.99)} | #{pct.(0.999)} | #{List.last(sorted)} | " <>
          "#{Enum.max(walls)} | #{migrated} |"
      )
    end

    :ets.delete(acc)
  end

  defp tracker_calls(acc, calls) do
    {:ok, t} = Tracker.new(subscriber: self(), stall_grace_ms: 60_000)
    holder = spawn(fn -> Process.sleep(:infinity) end)

    ids =
      for _ <- 1..calls, into: [] do
        {:ok, w} = timed(acc, :register_writer, fn -> Tracker.register_writer(t, holder) end)
        w
      end
      |> List.to_tuple()

    w = fn i -> elem(ids, rem(i, calls)) end

    for i <- 1..calls do
      off = {i, 0}
      batch = [w.(i), w.(i + 1), w.(i + 2), w.(i + 3)]
      :ok = timed(acc, :commit, fn -> Tracker.commit(t, off, batch) end)
      :ok = timed(acc, :pause, fn -> Tracker.pause(t, w.(i + 1)) end)
      :ok = timed(acc, :resume, fn -> Tracker.resume(t, w.(i + 1)) end)
      :ok = timed(acc, :touch, fn -> Tracker.touch(t, w.(i + 2)) end)
      :ok = timed(acc, :flushed, fn -> Tracker.flushed(t, w.(i), off) end)

      {:ok, []} =
        timed(acc, :flushed_many, fn ->
          Tracker.flushed_many(t, [{w.(i + 1), off}, {w.(i + 2), off}])
        end)

      :ok = timed(acc, :remove, fn -> Tracker.remove(t, w.(i + 3)) end)
      {:ok, _} = timed(acc, :ack, fn -> Tracker.ack(t) end)
      _ = timed(acc, :pinning, fn -> Tracker.pinning(t) end)
      {:ok, _} = timed(acc, :sweep, fn -> Tracker.sweep(t) end)
      {:ok, _} = timed(acc, :take_events, fn -> Tracker.take_events(t) end)
      {:ok, _} = timed(acc, :writer_status, fn -> Tracker.writer_status(t, w.(i)) end)
      {:ok, _} = timed(acc, :stats, fn -> Tracker.stats(t) end)
      {:ok, _} = timed(acc, :work_stats, fn -> Tracker.work_stats(t) end)
      flush_mailbox()
    end

    {:ok, ^calls} = Tracker.ack(t)

    for i <- 0..(calls - 1),
        do: :ok = timed(acc, :unregister, fn -> Tracker.unregister(t, elem(ids, i)) end)

    Tracker.close(t)
  end

  defp buffer_calls(acc, calls) do
    {:ok, b} = BatchBuffer.new(max_messages: 9, linger_ms: 60_000, capacity_messages: 64)
    payload = :binary.copy("x", 64)
    many = List.duplicate(payload, 8)

    for i <- 1..calls do
      :ok = timed(acc, :push, fn -> BatchBuffer.push(b, {payload, {i, 0}}) end)
      {:ok, 8} = timed(acc, :push_many, fn -> BatchBuffer.push_many(b, many) end)
      {:ok, batch} = timed(acc, :poll_batch, fn -> BatchBuffer.poll_batch(b) end)

      :ok =
        timed(acc, :ack_or_nack, fn ->
          if rem(i, 2) == 0,
            do: BatchBuffer.ack(b, batch),
            else: BatchBuffer.nack(b, batch, false)
        end)

      _ = timed(acc, :flush_nonblocking, fn -> BatchBuffer.flush(b, 0) end)
      {:ok, _} = timed(acc, :buffer_stats, fn -> BatchBuffer.stats(b) end)
      {:would_block, _} = timed(acc, :poll_empty, fn -> BatchBuffer.poll_batch(b) end)
    end

    {:ok, _} = BatchBuffer.stop(b, 0)
  end

  defp flush_mailbox do
    receive do
      _ -> flush_mailbox()
    after
      0 -> :ok
    end
  end

  # ---------------------------------------------------------------------------------------
  # Worst-case release

  defp release_cost(deliveries) do
    IO.puts("\nworst-case release: #{deliveries} finished deliveries behind a pinned head\n")

    IO.puts(
      "| budget | release call wall | thread CPU of the caller | normal-scheduler work | dirty work | library calls at the budget | ack exact |"
    )

    IO.puts("| --- | --- | --- | --- | --- | --- | --- |")
    for budget <- [1024, 1 <<< 40], do: measured(fn -> release_once(deliveries, budget) end)
  end

  defp release_once(deliveries, budget) do
    {:ok, t} = Tracker.new()
    :ok = Tracker.set_call_budget(t, budget)
    holder = spawn(fn -> Process.sleep(:infinity) end)
    {:ok, pinner} = Tracker.register_writer(t, holder)
    ws = List.to_tuple(for _ <- 1..1000, do: elem(Tracker.register_writer(t, holder), 1))
    :ok = Tracker.commit(t, {1, 0}, [pinner])
    for tx <- 2..(deliveries + 1), do: :ok = Tracker.commit(t, {tx, 0}, [elem(ws, rem(tx, 1000))])

    for k <- 0..999 do
      last = deliveries + 1 - rem(deliveries + 1 - k, 1000)
      :ok = Tracker.flushed(t, elem(ws, k), {last, 0})
    end

    {:ok, w0} = Tracker.work_stats(t)
    {tid0, c0} = Native.thread_clock()
    t0 = :erlang.monotonic_time(:nanosecond)
    :ok = Tracker.flushed(t, pinner, {1, 0})
    wall = :erlang.monotonic_time(:nanosecond) - t0
    {tid1, c1} = Native.thread_clock()
    {:ok, w} = Tracker.work_stats(t)
    {:ok, ack} = Tracker.ack(t)
    dirty = w.dirty_work - w0.dirty_work

    normal =
      w.deliveries_popped + w.entries_scanned - w0.deliveries_popped - w0.entries_scanned - dirty

    cpu = if tid0 == tid1, do: "#{div(c1 - c0, 1000)} µs", else: "(migrated)"
    label = if budget >= 1 <<< 40, do: "unbounded", else: "#{budget}"

    IO.puts(
      "| #{label} | #{Float.round(wall / 1.0e6, 2)} ms | #{cpu} | #{normal} | #{dirty} | " <>
        "#{w.backlogs - w0.backlogs} | #{if ack == deliveries + 1, do: "yes", else: "NO"} |"
    )

    Tracker.close(t)
  end

  defp median(xs) do
    sorted = Enum.sort(xs)
    Enum.at(sorted, div(length(sorted), 2))
  end
end

Tidemark.Bench.TrackerBench.main(System.argv())
