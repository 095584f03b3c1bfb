defmodule Tidemark.TrackerTest do
  use ExUnit.Case, async: true

  import Tidemark.TestHelpers
  alias Tidemark.Tracker

  defp orphaned?(t, w) do
    case Tracker.pinning(t) do
      {:ok, %{writer: ^w, orphaned: true}} -> true
      _ -> false
    end
  end

  # One crash eviction, one removal and one challenge, in that order; returns the writers
  # {crashed, removed, challenged}.
  defp three_events(t) do
    {:ok, wc} = Tracker.register_writer(t, idle_process(), down: :crash)
    {:ok, wr} = Tracker.register_writer(t, idle_process())
    {:ok, ws} = Tracker.register_writer(t, idle_process())
    :ok = Tracker.commit(t, {1, 0}, [wc, wr, ws])
    :ok = Tracker.down(t, wc, :crash)
    :ok = Tracker.down(t, wr, :cleanup)
    Process.sleep(5)
    {:ok, %{challenged: 1}} = Tracker.sweep(t)
    {wc, wr, ws}
  end

  describe "story 1: a killed consumer" do
    test "Process.exit(pid, :kill): the sweep evicts it, the ack reaches the last commit" do
      grace = 300
      {:ok, t} = Tracker.new(grace_ms: grace, subscriber: self())
      a = idle_process()
      b = idle_process()
      {:ok, wa} = Tracker.register_writer(t, a)
      {:ok, wb} = Tracker.register_writer(t, b)

      :ok = Tracker.commit(t, {10, 1}, [wa, wb])
      :ok = Tracker.commit(t, {11, 4}, [wb])
      :ok = Tracker.flushed(t, wb, {11, 4})
      assert {:ok, 9} = Tracker.ack(t)
      assert {:ok, %{writer: ^wa, owes: {10, 1}, orphaned: false}} = Tracker.pinning(t)

      Process.exit(a, :kill)
      # The NIF's own monitor reports it (teardown class): orphaned, still pinning.
      eventually(fn -> orphaned?(t, wa) end, 2_000, "the monitor to mark the writer orphaned")
      assert {:ok, %{evicted: 0}} = Tracker.sweep(t)
      assert {:ok, 9} = Tracker.ack(t)
      refute_received {:tidemark_evicted, _, _, _}

      Process.sleep(grace + 50)
      assert {:ok, %{evicted: 1}} = Tracker.sweep(t)
      assert {:ok, 11} = Tracker.ack(t)
      assert_receive {:tidemark_evicted, ^t, ^wa, :orphaned}
      assert_receive {:tidemark_ack, ^t, 11}
      assert {:ok, {:evicted, :orphaned}} = Tracker.writer_status(t, wa)
      assert {:error, :evicted_writer} = Tracker.flushed(t, wa, {10, 1})
      assert {:ok, %{evicted_orphaned: 1, removes: 0}} = Tracker.stats(t)
    end

    test "a brutal-kill supervisor shutdown is seen too" do
      {:ok, t} = Tracker.new(grace_ms: 50, subscriber: self())

      children = [
        %{
          id: :writer,
          start: {Agent, :start_link, [fn -> :state end]},
          shutdown: :brutal_kill
        }
      ]

      {:ok, sup} = Supervisor.start_link(children, strategy: :one_for_one)
      [{:writer, pid, :worker, _}] = Supervisor.which_children(sup)
      {:ok, w} = Tracker.register_writer(t, pid)
      :ok = Tracker.commit(t, {7, 0}, [w])
      assert {:ok, 6} = Tracker.ack(t)

      :ok = Supervisor.stop(sup)
      refute Process.alive?(pid)
      eventually(fn -> orphaned?(t, w) end, 2_000, "orphaned after the shutdown")
      Process.sleep(60)
      assert {:ok, %{evicted: 1}} = Tracker.sweep(t)
      assert_receive {:tidemark_evicted, ^t, ^w, :orphaned}
      assert_receive {:tidemark_ack, ^t, 7}
    end
  end

  describe "writer_status and event shapes" do
    test "writer_status is :orphaned once a monitored (teardown) process was killed" do
      {:ok, t} = Tracker.new(grace_ms: 30)
      p = idle_process()
      idle = idle_process()
      {:ok, w} = Tracker.register_writer(t, p)
      {:ok, wi} = Tracker.register_writer(t, idle)
      :ok = Tracker.commit(t, {4, 0}, [w])
      assert {:ok, :pending} = Tracker.writer_status(t, w)
      assert {:ok, :idle} = Tracker.writer_status(t, wi)

      Process.exit(p, :kill)
      Process.exit(idle, :kill)
      eventually(fn -> Tracker.writer_status(t, w) == {:ok, :orphaned} end, 5_000, "orphaned")
      eventually(fn -> Tracker.writer_status(t, wi) == {:ok, :orphaned} end, 5_000, "orphaned")
      # Still pinning until a sweep past the grace period.
      assert {:ok, 3} = Tracker.ack(t)
      Process.sleep(40)
      assert {:ok, %{evicted: 1}} = Tracker.sweep(t)
      assert {:ok, {:evicted, :orphaned}} = Tracker.writer_status(t, w)
      assert {:ok, 4} = Tracker.ack(t)
      # An orphan that owes nothing stays :orphaned until unregistered.
      assert {:ok, :orphaned} = Tracker.writer_status(t, wi)
      :ok = Tracker.unregister(t, wi)
      assert {:error, :unknown_writer} = Tracker.writer_status(t, wi)
      # Its slot's next writer is not orphaned.
      {:ok, fresh} = Tracker.register_writer(t, idle_process())
      assert {:ok, :idle} = Tracker.writer_status(t, fresh)
    end

    test "down(:teardown) by hand and a dead pid at registration are :orphaned too" do
      {:ok, t} = Tracker.new()
      {:ok, w} = Tracker.register_writer(t, idle_process())
      :ok = Tracker.down(t, w, :teardown)
      assert {:ok, :orphaned} = Tracker.writer_status(t, w)
      dead = spawn(fn -> :ok end)
      wait_dead(dead)
      {:ok, wd} = Tracker.register_writer(t, dead)
      assert {:ok, :orphaned} = Tracker.writer_status(t, wd)
      {:ok, wc} = Tracker.register_writer(t, idle_process())
      :ok = Tracker.down(t, wc, :crash)
      assert {:ok, {:evicted, :crashed}} = Tracker.writer_status(t, wc)
    end

    test "default (events: :legacy): the first release's take_events terms and messages" do
      for opts <- [[], [events: :legacy]] do
        {:ok, polled} = Tracker.new([grace_ms: 1] ++ opts)
        {wc, wr, ws} = three_events(polled)

        assert {:ok, [{:evicted, ^wc, :crashed}, {:removed, ^wr}, {:challenge, ^ws}]} =
                 Tracker.take_events(polled)

        {:ok, pushed} = Tracker.new([grace_ms: 1, subscriber: self()] ++ opts)
        {wc, wr, ws} = three_events(pushed)
        assert_receive {:tidemark_evicted, ^pushed, ^wc, :crashed}
        assert_receive {:tidemark_removed, ^pushed, ^wr}
        assert_receive {:tidemark_challenge, ^pushed, ^ws}
        assert {:ok, []} = Tracker.take_events(pushed)
        refute_received {:tidemark_event, _, _}
      end
    end

    test "events: :unified: take_events returns the terms subscriber messages carry" do
      {:ok, polled} = Tracker.new(grace_ms: 1, events: :unified)
      {wc, wr, ws} = three_events(polled)

      assert {:ok, [{:evicted, ^wc, :crashed}, {:removed, ^wr}, {:challenged, ^ws}]} =
               Tracker.take_events(polled)

      {:ok, pushed} = Tracker.new(grace_ms: 1, subscriber: self(), events: :unified)
      {wc, wr, ws} = three_events(pushed)

      for e <- [{:evicted, wc, :crashed}, {:removed, wr}, {:challenged, ws}] do
        assert_receive {:tidemark_event, ^pushed, ^e}
      end

      assert {:ok, []} = Tracker.take_events(pushed)
      refute_received {:tidemark_evicted, _, _, _}
      refute_received {:tidemark_removed, _, _}
      refute_received {:tidemark_challenge, _, _}
    end

    test "events: :unified: a monitored kill and a stall are {:tidemark_event, t, event}" do
      {:ok, t} = Tracker.new(grace_ms: 20, subscriber: self(), events: :unified)
      p = idle_process()
      {:ok, w} = Tracker.register_writer(t, p)
      {:ok, wc} = Tracker.register_writer(t, idle_process(), down: :crash)
      :ok = Tracker.commit(t, {7, 0}, [w, wc])
      :ok = Tracker.down(t, wc, :crash)
      assert_receive {:tidemark_event, ^t, {:evicted, ^wc, :crashed}}
      Process.exit(p, :kill)
      eventually(fn -> Tracker.writer_status(t, w) == {:ok, :orphaned} end, 5_000, "orphaned")
      Process.sleep(30)
      assert {:ok, %{evicted: 1}} = Tracker.sweep(t)
      assert_receive {:tidemark_event, ^t, {:evicted, ^w, :orphaned}}
      assert_receive {:tidemark_ack, ^t, 7}
    end

    test "option :stall_grace_ms and its alias :grace_ms set the grace period" do
      for key <- [:stall_grace_ms, :grace_ms] do
        # 1 ms: a writer that owes a commit is challenged by a sweep once 1 ms passed.
        {:ok, short} = Tracker.new([{key, 1}])
        {:ok, w} = Tracker.register_writer(short, idle_process())
        :ok = Tracker.commit(short, {1, 0}, [w])

        eventually(
          fn -> match?({:ok, %{challenged: 1}}, Tracker.sweep(short)) end,
          2_000,
          "a challenge with #{key}: 1"
        )

        # 2^62 ms: never reached, nothing is challenged.
        {:ok, long} = Tracker.new([{key, Integer.pow(2, 62)}])
        {:ok, w} = Tracker.register_writer(long, idle_process())
        :ok = Tracker.commit(long, {1, 0}, [w])
        Process.sleep(5)
        assert {:ok, %{challenged: 0, evicted: 0}} = Tracker.sweep(long)
        assert_raise ArgumentError, fn -> Tracker.new([{key, -1}]) end
      end

      assert_raise ArgumentError, fn -> Tracker.new(stall_grace_ms: 1, grace_ms: 1) end
    end

    test "the events option is validated" do
      assert_raise ArgumentError, fn -> Tracker.new(events: :other) end
      assert_raise ArgumentError, fn -> Tracker.new(events: nil) end
    end

    test "registrations that make the library allocate (dirty scheduler) and the rest work" do
      {:ok, t} = Tracker.new(expected_writers: 16)
      ids = for _ <- 1..200, do: elem(Tracker.register_writer(t, self()), 1)
      assert length(Enum.uniq(ids)) == 200
      :ok = Tracker.commit(t, {1, 0}, ids)
      assert {:ok, []} = Tracker.flushed_many(t, Enum.map(ids, &{&1, {1, 0}}))
      assert {:ok, 1} = Tracker.ack(t)
      for w <- ids, do: :ok = Tracker.unregister(t, w)
      assert {:ok, %{registered: 0}} = Tracker.stats(t)
      ids2 = for _ <- 1..20, do: elem(Tracker.register_writer(t, self()), 1)
      assert Enum.all?(ids2, &(Tracker.writer_status(t, &1) == {:ok, :idle}))
    end
  end

  describe "story 2: crash class" do
    test "a crash-class writer that crashes unpins at once, without a sweep" do
      {:ok, t} = Tracker.new(subscriber: self())
      crasher = idle_process()
      other = idle_process()
      {:ok, wc} = Tracker.register_writer(t, crasher, down: :crash)
      {:ok, wo} = Tracker.register_writer(t, other)
      :ok = Tracker.commit(t, {5, 0}, [wc, wo])
      :ok = Tracker.commit(t, {6, 0}, [wo])
      :ok = Tracker.flushed(t, wo, {6, 0})
      assert {:ok, 4} = Tracker.ack(t)
      assert_receive {:tidemark_ack, ^t, 4}

      send(crasher, {:exit, :boom})
      assert_receive {:tidemark_evicted, ^t, ^wc, :crashed}, 2_000
      assert_receive {:tidemark_ack, ^t, 6}, 2_000
      assert {:ok, 6} = Tracker.ack(t)
      assert {:ok, {:evicted, :crashed}} = Tracker.writer_status(t, wc)
    end

    test "a pid already dead at registration is reported at once" do
      {:ok, t} = Tracker.new(subscriber: self())
      dead = spawn(fn -> :ok end)
      wait_dead(dead)
      {:ok, w} = Tracker.register_writer(t, dead, down: :crash)
      assert_received {:tidemark_evicted, ^t, ^w, :crashed}
      assert {:ok, {:evicted, :crashed}} = Tracker.writer_status(t, w)
      assert {:error, :evicted_writer} = Tracker.commit(t, {1, 0}, [w])
      # Unregistering frees the slot; the id becomes stale.
      assert :ok = Tracker.unregister(t, w)
      assert {:error, :unknown_writer} = Tracker.flushed(t, w, {1, 0})
    end

    test "cleanup class unpins and reports a removal" do
      {:ok, t} = Tracker.new(subscriber: self())
      p = idle_process()
      {:ok, w} = Tracker.register_writer(t, p, down: :cleanup)
      :ok = Tracker.commit(t, {3, 0}, [w])
      Process.exit(p, :kill)
      assert_receive {:tidemark_removed, ^t, ^w}, 2_000
      assert_receive {:tidemark_ack, ^t, 3}
    end

    test "an unregistered writer's death reports nothing" do
      {:ok, t} = Tracker.new(subscriber: self())
      p = idle_process()
      {:ok, w} = Tracker.register_writer(t, p, down: :crash)
      :ok = Tracker.unregister(t, w)
      Process.exit(p, :kill)
      wait_dead(p)
      Process.sleep(20)
      refute_received {:tidemark_evicted, _, _, _}
      assert {:error, :unknown_writer} = Tracker.writer_status(t, w)
    end
  end

  describe "story 3: a wedged but alive writer" do
    setup do
      {:ok, t} = Tracker.new(grace_ms: 100, subscriber: self())
      test = self()

      # A writer that never flushes but answers "are you deferring?" with touch/2.
      wedged =
        spawn(fn ->
          receive do
            {:writer, w} ->
              loop = fn loop ->
                receive do
                  :are_you_alive ->
                    send(test, {:touched, Tracker.touch(t, w)})
                    loop.(loop)
                end
              end

              loop.(loop)
          end
        end)

      healthy = idle_process()
      {:ok, ww} = Tracker.register_writer(t, wedged)
      {:ok, wh} = Tracker.register_writer(t, healthy)
      send(wedged, {:writer, ww})
      :ok = Tracker.commit(t, {20, 0}, [ww, wh])
      :ok = Tracker.commit(t, {21, 0}, [wh])
      :ok = Tracker.flushed(t, wh, {21, 0})
      assert {:ok, 19} = Tracker.ack(t)
      %{t: t, ww: ww, wedged: wedged}
    end

    test "challenged, then evicted when it does not answer", %{t: t, ww: ww} do
      assert {:ok, %{challenged: 0}} = Tracker.sweep(t)
      Process.sleep(130)
      assert {:ok, %{challenged: 1, evicted: 0}} = Tracker.sweep(t)
      assert_receive {:tidemark_challenge, ^t, ^ww}
      assert {:ok, %{writer: ^ww, challenged: true}} = Tracker.pinning(t)

      assert {:ok, %{evicted: 1}} = Tracker.sweep(t)
      assert_receive {:tidemark_evicted, ^t, ^ww, :stalled}
      assert_receive {:tidemark_ack, ^t, 21}
      assert {:ok, %{challenges: 1, evicted_stalled: 1}} = Tracker.stats(t)
    end

    test "challenged, answers with touch, is not evicted", %{t: t, ww: ww, wedged: wedged} do
      Process.sleep(130)
      assert {:ok, %{challenged: 1}} = Tracker.sweep(t)
      assert_receive {:tidemark_challenge, ^t, ^ww}
      send(wedged, :are_you_alive)
      assert_receive {:touched, :ok}

      assert {:ok, %{evicted: 0, challenged: 0}} = Tracker.sweep(t)
      assert {:ok, 19} = Tracker.ack(t)
      assert {:ok, :pending} = Tracker.writer_status(t, ww)
      refute_received {:tidemark_evicted, _, _, _}
    end

    test "a paused writer is neither challenged nor evicted", %{t: t, ww: ww} do
      :ok = Tracker.pause(t, ww)
      Process.sleep(130)
      assert {:ok, %{challenged: 0, evicted: 0}} = Tracker.sweep(t)
      assert {:ok, %{paused: true}} = Tracker.pinning(t)
      :ok = Tracker.resume(t, ww)
      assert {:ok, %{challenged: 0}} = Tracker.sweep(t)
    end
  end

  describe "API shape" do
    test "returns follow the status enum" do
      {:ok, t} = Tracker.new(initial_ack: 100)
      p = idle_process()
      assert {:ok, 100} = Tracker.ack(t)
      assert {:error, :empty} = Tracker.pinning(t)
      {:ok, w} = Tracker.register_writer(t, p)
      assert {:error, :offset_regressed} = Tracker.commit(t, {100, 0}, [w])
      assert :ok = Tracker.commit(t, {101, 0}, [w])
      assert {:error, :offset_regressed} = Tracker.commit(t, {101, 5}, [w])
      assert {:error, :unknown_writer} = Tracker.flushed(t, 12_345, {1, 0})

      assert {:ok, [{12_345, :unknown_writer}]} =
               Tracker.flushed_many(t, [{w, {101, 0}}, {12_345, {1, 0}}])

      assert {:ok, 101} = Tracker.ack(t)
      # remove/2 unpins a pending writer at once.
      :ok = Tracker.commit(t, {102, 0}, [w])
      assert {:ok, 101} = Tracker.ack(t)
      assert :ok = Tracker.remove(t, w)
      assert {:ok, 102} = Tracker.ack(t)
      # (The header says tidemark_tracker_remove queues a REMOVED event; the library does not:
      # see the binding's notes. Only a :cleanup down reports one.)
      assert {:ok, _} = Tracker.take_events(t)
    end

    test "malformed arguments raise ArgumentError" do
      {:ok, t} = Tracker.new()
      assert_raise ArgumentError, fn -> Tracker.commit(t, 10, []) end
      assert_raise ArgumentError, fn -> Tracker.commit(t, {-1, 0}, []) end
      assert_raise ArgumentError, fn -> Tracker.commit(t, {1, 0}, [:a]) end
      assert_raise ArgumentError, fn -> Tracker.flushed(t, "w", {1, 0}) end
      assert_raise ArgumentError, fn -> Tracker.flushed_many(t, [{1, 2}]) end
      assert_raise ArgumentError, fn -> Tracker.register_writer(t, self(), down: :maybe) end
      assert_raise ArgumentError, fn -> Tracker.new(grace: 5) end
      assert_raise ArgumentError, fn -> Tracker.ack(make_ref()) end
      assert_raise ArgumentError, fn -> Tracker.new(grace_ms: -5) end
    end

    test "large lists run on a dirty scheduler and still work" do
      {:ok, t} = Tracker.new(subscriber: self())
      ws = for _ <- 1..3_000, do: elem(Tracker.register_writer(t, self()), 1)
      assert :ok = Tracker.commit(t, {1, 0}, ws)
      assert {:ok, 0} = Tracker.ack(t)
      assert {:ok, []} = Tracker.flushed_many(t, Enum.map(ws, &{&1, {1, 0}}))
      assert {:ok, 1} = Tracker.ack(t)
      assert_receive {:tidemark_ack, ^t, 1}
    end

    test "the owner's exit closes the tracker" do
      test = self()

      owner =
        spawn(fn ->
          {:ok, t} = Tracker.new()
          send(test, {:tracker, t})

          receive do
            :stop -> :ok
          end
        end)

      assert_receive {:tracker, t}
      p = idle_process()
      {:ok, w} = Tracker.register_writer(t, p)
      send(owner, :stop)
      wait_dead(owner)

      eventually(fn -> Tracker.commit(t, {1, 0}, [w]) == {:error, :closed} end)
      assert {:error, :closed} = Tracker.register_writer(t, p)
    end
  end
end
