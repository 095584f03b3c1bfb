defmodule Tidemark.SweeperTest do
  use ExUnit.Case, async: true

  import Tidemark.TestHelpers
  alias Tidemark.{Sweeper, Tracker}

  test "sweeps every interval and forwards the eviction of a killed writer to a pid" do
    {:ok, t} = Tracker.new(grace_ms: 20)
    a = idle_process()
    b = idle_process()
    {:ok, wa} = Tracker.register_writer(t, a)
    {:ok, wb} = Tracker.register_writer(t, b)
    :ok = Tracker.commit(t, {10, 0}, [wa, wb])
    :ok = Tracker.flushed(t, wb, {10, 0})

    sweeper = start_supervised!({Sweeper, tracker: t, interval_ms: 5, subscriber: self()})

    Process.exit(a, :kill)
    assert_receive {:tidemark_event, ^t, {:evicted, ^wa, :orphaned}}, 10_000
    assert {:ok, 10} = Tracker.ack(t)
    assert {:ok, {:evicted, :orphaned}} = Tracker.writer_status(t, wa)

    # It keeps ticking: counted, not timed.
    eventually(fn -> Sweeper.stats(sweeper).sweeps >= 5 end, 10_000, "five sweeps")
    stats = Sweeper.stats(sweeper)
    assert stats.evicted == 1
    assert stats.events == 1
    refute_received {:tidemark_event, _, _}
  end

  test "forwards challenges to a function, in the message shape" do
    {:ok, t} = Tracker.new(grace_ms: 10)
    test = self()
    p = idle_process()
    {:ok, w} = Tracker.register_writer(t, p)
    :ok = Tracker.commit(t, {5, 0}, [w])

    fun = fn msg -> send(test, {:forwarded, self(), msg}) end
    sweeper = start_supervised!({Sweeper, tracker: t, interval_ms: 5, subscriber: fun})

    assert_receive {:forwarded, ^sweeper, {:tidemark_event, ^t, {:challenged, ^w}}}, 10_000
    # Not answered: the next sweep past the grace period evicts it (stalled).
    assert_receive {:forwarded, ^sweeper, {:tidemark_event, ^t, {:evicted, ^w, :stalled}}},
                   10_000

    assert {:ok, 5} = Tracker.ack(t)
  end

  test "forwards the unified shape whatever the tracker's events option" do
    for events <- [:legacy, :unified] do
      {:ok, t} = Tracker.new(grace_ms: 10, events: events)
      {:ok, w} = Tracker.register_writer(t, idle_process())
      {:ok, wr} = Tracker.register_writer(t, idle_process(), down: :cleanup)
      :ok = Tracker.commit(t, {5, 0}, [w, wr])
      :ok = Tracker.down(t, wr, :cleanup)

      sweeper =
        start_supervised!({Sweeper, tracker: t, interval_ms: 60_000, subscriber: self()},
          id: events
        )

      Process.sleep(15)
      assert {:ok, %{challenged: 1, events: 2}} = Sweeper.sweep_now(sweeper)
      assert_received {:tidemark_event, ^t, {:removed, ^wr}}
      assert_received {:tidemark_event, ^t, {:challenged, ^w}}
      refute_received {:tidemark_event, _, {:challenge, _}}
    end
  end

  test "forwards events queued between ticks too (a crash reported by the monitor)" do
    {:ok, t} = Tracker.new()
    p = idle_process()
    {:ok, w} = Tracker.register_writer(t, p, down: :crash)
    sweeper = start_supervised!({Sweeper, tracker: t, interval_ms: 60_000, subscriber: self()})

    Process.exit(p, :kill)
    wait_dead(p)
    eventually(fn -> Tracker.writer_status(t, w) == {:ok, {:evicted, :crashed}} end)
    # sweep_now/1 runs a tick at once: the crash was queued by the monitor, not the sweep.
    assert {:ok, %{evicted: 0, events: 1}} = Sweeper.sweep_now(sweeper)
    assert_received {:tidemark_event, ^t, {:evicted, ^w, :crashed}}
    assert %{sweeps: 1, events: 1} = Sweeper.stats(sweeper)
  end

  test "stops normally when the tracker is closed, and the supervisor leaves it stopped" do
    {:ok, t} = Tracker.new()

    spec = {Sweeper, tracker: t, interval_ms: 5, subscriber: self(), id: :closing}
    {:ok, sup} = Supervisor.start_link([spec], strategy: :one_for_one)

    [{:closing, sweeper, :worker, _}] = Supervisor.which_children(sup)
    ref = Process.monitor(sweeper)
    :ok = Tracker.close(t)
    assert_receive {:DOWN, ^ref, :process, ^sweeper, :normal}, 10_000
    # :transient: a normal exit is not restarted.
    assert [{:closing, :undefined, :worker, _}] = Supervisor.which_children(sup)
    Supervisor.stop(sup)
  end

  test "child_spec and option validation" do
    {:ok, t} = Tracker.new()

    assert %{id: Sweeper, restart: :transient, start: {Sweeper, :start_link, [_]}} =
             Sweeper.child_spec(tracker: t, subscriber: self())

    assert %{id: :mine} = Sweeper.child_spec(tracker: t, subscriber: self(), id: :mine)
    assert_raise ArgumentError, fn -> Sweeper.start_link(tracker: t) end

    assert_raise ArgumentError, fn ->
      Sweeper.start_link(tracker: t, subscriber: self(), interval_ms: 0)
    end

    assert_raise ArgumentError, fn -> Sweeper.start_link(tracker: :nope, subscriber: self()) end
    assert_raise ArgumentError, fn -> Sweeper.start_link(tracker: t, subscriber: :x) end

    assert_raise ArgumentError, fn ->
      Sweeper.start_link(tracker: t, subscriber: self(), every: 5)
    end
  end
end
