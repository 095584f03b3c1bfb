defmodule Tidemark.SchedulerSafetyTest do
  # Not async: the per-call work is read from the tracker's counters between calls, which only
  # attributes it to one call while nothing else runs on that tracker.
  use ExUnit.Case, async: false

  import Tidemark.TestHelpers

  alias Tidemark.{BatchBuffer, Tracker}

  # What is checked. A NIF on a normal scheduler must return within about 1 ms. That is proven
  # by counting, never with a clock: these VMs charge interrupt and VM-exit time to whatever
  # thread runs, so a constant 4.5 µs C body has read as 2.8 ms of thread CPU time, and a test
  # with a CPU-time or wall-clock maximum flakes. The library examines at most `budget`
  # deliveries per call and exports what it did (`Tracker.work_stats/1`); the binding finishes a
  # backlog on a dirty CPU scheduler and counts that work apart (`:dirty_work`). So the work a
  # call did on the normal scheduler is
  #
  #     Δ(deliveries_popped + entries_scanned) − Δdirty_work
  #
  # read before and after the call, and it must stay within the budget (flushed_many: two
  # budgets, see Tidemark.Tracker). Per-call CPU
  # times are the bench's business (bench/tracker.exs, "per-call cost").

  @calls 100_000

  defp work(t) do
    {:ok, w} = Tracker.work_stats(t)
    w.deliveries_popped + w.entries_scanned - w.dirty_work
  end

  # Runs `fun`, returns {result, work it did on the normal scheduler}.
  defp counted(t, fun) do
    w0 = work(t)
    result = fun.()
    {result, work(t) - w0}
  end

  # Per kind, the most normal-scheduler work one call did.
  defp track(maxes, kind, n), do: Map.update(maxes, kind, n, &max(&1, n))

  defp assert_within(maxes, budget) do
    for {kind, n} <- maxes do
      limit = if kind == :flushed_many, do: 2 * budget - 1, else: budget
      assert n <= limit, "#{kind}: #{n} deliveries on the normal scheduler (budget #{budget})"
    end
  end

  @tag timeout: 600_000
  test "tracker: 100 000 calls of each kind within the call budget, results checked" do
    budget = 16
    {:ok, t} = Tracker.new(subscriber: self(), stall_grace_ms: 60_000)
    :ok = Tracker.set_call_budget(t, budget)
    holder = spawn(fn -> Process.sleep(:infinity) end)
    ids = :atomics.new(@calls, signed: false)

    for i <- 1..@calls do
      {:ok, w} = Tracker.register_writer(t, holder)
      :atomics.put(ids, i, w)
    end

    w = fn i -> :atomics.get(ids, rem(i, @calls) + 1) end

    maxes =
      Enum.reduce(1..@calls, %{}, fn i, maxes ->
        off = {i, 0}
        batch = [w.(i), w.(i + 1), w.(i + 2), w.(i + 3)]

        calls = [
          commit: fn -> :ok = Tracker.commit(t, off, batch) end,
          pause: fn -> :ok = Tracker.pause(t, w.(i + 1)) end,
          resume: fn -> :ok = Tracker.resume(t, w.(i + 1)) end,
          touch: fn -> :ok = Tracker.touch(t, w.(i + 2)) end,
          flushed: fn -> :ok = Tracker.flushed(t, w.(i), off) end,
          flushed_many: fn ->
            {:ok, []} = Tracker.flushed_many(t, [{w.(i + 1), off}, {w.(i + 2), off}])
          end,
          remove: fn -> :ok = Tracker.remove(t, w.(i + 3)) end,
          ack: fn -> {:ok, _} = Tracker.ack(t) end,
          pinning: fn -> Tracker.pinning(t) end,
          sweep: fn -> {:ok, _} = Tracker.sweep(t) end,
          take_events: fn -> {:ok, _} = Tracker.take_events(t) end,
          writer_status: fn -> {:ok, _} = Tracker.writer_status(t, w.(i)) end,
          stats: fn -> {:ok, _} = Tracker.stats(t) end
        ]

        maxes =
          Enum.reduce(calls, maxes, fn {kind, fun}, maxes ->
            {_, n} = counted(t, fun)
            track(maxes, kind, n)
          end)

        # Keep the mailbox small: an ack message arrives for most commits.
        flush_mailbox()
        maxes
      end)

    assert {:ok, @calls} = Tracker.ack(t)

    maxes =
      Enum.reduce(1..@calls, maxes, fn i, maxes ->
        {:ok, n} = counted(t, fn -> Tracker.unregister(t, :atomics.get(ids, i)) end)
        track(maxes, :unregister, n)
      end)

    assert_within(maxes, budget)
    {:ok, ws} = Tracker.work_stats(t)
    assert ws.max_call_work <= budget
    assert ws.backlog == false
    IO.puts("\n  normal-scheduler work per call, max over #{@calls} (budget #{budget}):")
    IO.puts("  " <> Enum.map_join(Enum.sort(maxes), ", ", fn {k, n} -> "#{k} #{n}" end))
  end

  @deliveries 100_000
  @final @deliveries + 1
  @budget 64

  # A tracker whose first commit goes to `pinner` alone and whose next @deliveries commits go
  # to 1 000 other writers, which then all report everything: every delivery is done except the
  # head's, so releasing the head leaves @deliveries + 1 deliveries to pop. Every call on the
  # way is counted. Returns {tracker, maxes}.
  defp pinned(pinner_pid, opts \\ []) do
    {:ok, t} = Tracker.new(opts)
    :ok = Tracker.set_call_budget(t, @budget)
    holder = spawn(fn -> Process.sleep(:infinity) end)
    {:ok, pinner} = Tracker.register_writer(t, pinner_pid, down: :crash)
    ws = for _ <- 1..1000, do: elem(Tracker.register_writer(t, holder), 1)
    ws = List.to_tuple(ws)
    :ok = Tracker.commit(t, {1, 0}, [pinner])

    maxes =
      Enum.reduce(2..(@deliveries + 1), %{}, fn tx, maxes ->
        {:ok, n} = counted(t, fn -> Tracker.commit(t, {tx, 0}, [elem(ws, rem(tx, 1000))]) end)
        track(maxes, :commit, n)
      end)

    # Each writer reports its last delivery: its whole stint is done (O(1): it does not pin).
    maxes =
      Enum.reduce(0..999, maxes, fn k, maxes ->
        last = @deliveries + 1 - rem(@deliveries + 1 - k, 1000)
        {:ok, n} = counted(t, fn -> Tracker.flushed(t, elem(ws, k), {last, 0}) end)
        track(maxes, :flushed, n)
      end)

    assert {:ok, 0} = Tracker.ack(t)
    {:ok, w} = Tracker.work_stats(t)
    assert w.log_len == @deliveries + 1, "deliveries behind the head: #{w.log_len}"
    {t, pinner, maxes}
  end

  defp assert_drained(t, w0) do
    assert {:ok, @final} = Tracker.ack(t)
    {:ok, w} = Tracker.work_stats(t)
    assert w.backlog == false
    assert {:ok, false} = Tracker.has_backlog(t)
    assert w.log_len == 0
    assert w.max_call_work <= @budget
    # The release popped every delivery, at most @budget per library call: many calls.
    assert w.deliveries_popped - w0.deliveries_popped == @deliveries + 1
    assert w.backlogs - w0.backlogs >= div(@deliveries, @budget) - 1
    assert w.dirty_work - w0.dirty_work >= @deliveries + 1 - 2 * @budget
    w
  end

  defp report(label, maxes, w0, w) do
    IO.puts(
      "\n  #{label}: #{w.deliveries_popped - w0.deliveries_popped} deliveries popped, " <>
        "#{w.backlogs - w0.backlogs} budget stops, " <>
        "#{w.dirty_continuations - w0.dirty_continuations} dirty continuation(s), " <>
        "#{w.background_runs - w0.background_runs} background run(s); max normal-scheduler " <>
        "work per call " <> Enum.map_join(Enum.sort(maxes), ", ", fn {k, n} -> "#{k} #{n}" end)
    )
  end

  @tag timeout: 300_000
  test "releasing a head pinned by 10^5 deliveries: flushed/3 stays within the budget, the " <>
         "rest runs on a dirty scheduler, the ack is exact on return" do
    {t, pinner, maxes} = pinned(self(), subscriber: self())
    {:ok, w0} = Tracker.work_stats(t)
    {:ok, n} = counted(t, fn -> Tracker.flushed(t, pinner, {1, 0}) end)
    maxes = track(maxes, :release_flushed, n)
    w = assert_drained(t, w0)
    assert w.dirty_continuations - w0.dirty_continuations >= 1
    assert_within(maxes, @budget)
    # The subscriber hears the final ack.
    assert_receive {:tidemark_ack, ^t, @final}
    report("flushed/3 release", maxes, w0, w)
  end

  @tag timeout: 300_000
  test "releasing a pinned head by flushed_many/2: under two budgets on the normal scheduler, " <>
         "the rest of the list and the backlog on a dirty one, failures in order" do
    {t, pinner, maxes} = pinned(self())
    {:ok, w0} = Tracker.work_stats(t)
    # The release first, then 999 reports of which two are refused (unknown writers).
    holder = spawn(fn -> Process.sleep(:infinity) end)
    {:ok, extra} = Tracker.register_writer(t, holder)
    bogus = [extra + 1_000_000, extra + 2_000_000]

    reports =
      [{pinner, {1, 0}}] ++
        for(_ <- 1..500, do: {extra, {0, 0}}) ++
        [{Enum.at(bogus, 0), {1, 0}}] ++
        for(_ <- 1..497, do: {extra, {0, 0}}) ++ [{Enum.at(bogus, 1), {1, 0}}]

    {{:ok, fails}, n} = counted(t, fn -> Tracker.flushed_many(t, reports) end)
    assert Enum.map(fails, &elem(&1, 0)) == bogus
    assert Enum.all?(fails, &(elem(&1, 1) == :unknown_writer))
    maxes = track(maxes, :flushed_many, n)
    w = assert_drained(t, w0)
    assert w.dirty_continuations - w0.dirty_continuations >= 1
    assert_within(maxes, @budget)
    report("flushed_many/2 release", maxes, w0, w)
  end

  @tag timeout: 300_000
  test "releasing a pinned head by remove/2 and by down/3: backlog finished before return" do
    for how <- [:remove, :down] do
      {t, pinner, maxes} = pinned(self())
      {:ok, w0} = Tracker.work_stats(t)

      {:ok, n} =
        counted(t, fn ->
          case how do
            :remove -> Tracker.remove(t, pinner)
            :down -> Tracker.down(t, pinner, :crash)
          end
        end)

      maxes = track(maxes, how, n)
      w = assert_drained(t, w0)
      assert w.dirty_continuations - w0.dirty_continuations >= 1
      report("#{how} release", maxes, w0, w)
      # One library call, one budget: a call that drained for the head it released does not
      # also help the backlog it left.
      assert_within(maxes, @budget)
    end
  end

  @tag timeout: 300_000
  test "a killed pinner (monitor callback): the backlog is finished off the schedulers" do
    pid = idle_process()
    {t, pinner, _maxes} = pinned(pid, subscriber: self())
    flush_mailbox()
    {:ok, w0} = Tracker.work_stats(t)
    Process.exit(pid, :kill)
    wait_dead(pid)
    # The eviction event first, then acks up to the last commit, sent by the background thread
    # (ack/1 is one atomic load and runs nothing).
    first =
      receive do
        {:tidemark_ack, ^t, _} = m -> m
        {:tidemark_evicted, ^t, _, _} = m -> m
      after
        30_000 -> flunk("no message from the tracker")
      end

    assert first == {:tidemark_evicted, t, pinner, :crashed}
    assert_receive {:tidemark_ack, ^t, @final}, 30_000
    eventually(fn -> Tracker.ack(t) == {:ok, @final} end, 30_000, "the final ack")
    eventually(fn -> Tracker.has_backlog(t) == {:ok, false} end, 30_000, "no backlog")
    {:ok, w} = Tracker.work_stats(t)
    assert w.background_runs - w0.background_runs >= 1
    assert w.max_call_work <= @budget
    assert w.log_len == 0
    report("killed pinner", %{}, w0, w)
  end

  test "run_backlog/1, has_backlog/1 and set_call_budget/2" do
    {:ok, t} = Tracker.new()
    assert {:ok, false} = Tracker.run_backlog(t)
    assert {:ok, false} = Tracker.has_backlog(t)
    assert {:error, :invalid_argument} = Tracker.set_call_budget(t, 0)
    assert_raise FunctionClauseError, fn -> Tracker.set_call_budget(t, -1) end
    assert :ok = Tracker.set_call_budget(t, 7)
    assert {:ok, %{budget: 7, backlog: false, max_call_work: 0}} = Tracker.work_stats(t)
  end

  @tag timeout: 600_000
  test "batch buffer: 100 000 calls of each kind, results checked" do
    {:ok, b} = BatchBuffer.new(max_messages: 9, linger_ms: 60_000, capacity_messages: 64)
    payload = :binary.copy("x", 64)
    many = List.duplicate(payload, 8)

    for i <- 1..@calls do
      :ok = BatchBuffer.push(b, {payload, {i, 0}})
      {:ok, 8} = BatchBuffer.push_many(b, many)
      # 9 messages: exactly one count-triggered batch.
      {:ok, batch} = BatchBuffer.poll_batch(b)

      :ok =
        if rem(i, 2) == 0,
          do: BatchBuffer.ack(b, batch),
          else: BatchBuffer.nack(b, batch, false)

      _ = BatchBuffer.flush(b, 0)
      {:ok, _} = BatchBuffer.stats(b)
      {:would_block, _} = BatchBuffer.poll_batch(b)
    end

    {:ok, report} = BatchBuffer.stop(b, 0)
    assert report.accepted == @calls * 9
    assert report.accepted == report.delivered + report.failed + report.handed_back_count
  end

  test "register_writer/3 moves to a dirty scheduler only when the library must allocate" do
    # Counted with :dirty_registrations (registrations the library declined to serve without
    # allocating), never with a clock.
    n = 64
    {:ok, t} = Tracker.new(expected_writers: n)
    holder = spawn(fn -> Process.sleep(:infinity) end)

    # The slots allocated up front: all on the normal scheduler.
    first = for _ <- 1..n, do: elem(Tracker.register_writer(t, holder), 1)
    {:ok, w} = Tracker.work_stats(t)
    assert w.dirty_registrations == 0

    # Past them the library grows its table a segment of many slots at a time (see
    # tidemark_tracker_register): the registration that needs a new segment goes dirty, the
    # ones that find its slots ready stay on the normal scheduler.
    more = for _ <- 1..1000, do: elem(Tracker.register_writer(t, holder), 1)
    {:ok, w} = Tracker.work_stats(t)
    assert w.dirty_registrations >= 1
    assert w.dirty_registrations < 100, "#{w.dirty_registrations} of 1000 went dirty"
    ids = first ++ more
    assert length(Enum.uniq(ids)) == n + 1000
    {:ok, s} = Tracker.stats(t)
    assert s.registered == n + 1000

    # A writer registered on the dirty path works like any other.
    last = List.last(more)
    :ok = Tracker.commit(t, {10, 0}, [last])
    :ok = Tracker.flushed(t, last, {10, 0})
    assert {:ok, 10} = Tracker.ack(t)

    # Slots freed by unregister are reused without allocating.
    dirty = w.dirty_registrations
    for id <- Enum.take(ids, 10), do: :ok = Tracker.unregister(t, id)
    for _ <- 1..10, do: {:ok, _} = Tracker.register_writer(t, holder)
    {:ok, w} = Tracker.work_stats(t)
    assert w.dirty_registrations == dirty
  end

  defp flush_mailbox do
    receive do
      _ -> flush_mailbox()
    after
      0 -> :ok
    end
  end
end
