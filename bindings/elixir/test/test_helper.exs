ExUnit.start()

defmodule Tidemark.TestHelpers do
  @moduledoc false

  @doc "Polls `fun` until it returns a truthy value or `timeout_ms` passes (then flunks)."
  def eventually(fun, timeout_ms \\ 2_000, what \\ "condition") do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_eventually(fun, deadline, what)
  end

  defp do_eventually(fun, deadline, what) do
    case fun.() do
      result when result not in [nil, false] ->
        result

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          ExUnit.Assertions.flunk("timed out waiting for #{what}")
        else
          Process.sleep(2)
          do_eventually(fun, deadline, what)
        end
    end
  end

  @doc "A process that does nothing until told to exit."
  def idle_process do
    spawn(fn ->
      receive do
        {:exit, reason} -> exit(reason)
      end
    end)
  end

  def wait_dead(pid) do
    ref = Process.monitor(pid)

    receive do
      {:DOWN, ^ref, :process, ^pid, _} -> :ok
    after
      2_000 -> ExUnit.Assertions.flunk("process did not exit")
    end
  end
end
