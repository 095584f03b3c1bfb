defmodule Tidemark do
  @moduledoc """
  Elixir binding of the tidemark C library (`include/tidemark.h`):

    * `Tidemark.Tracker` — exact flush-offset tracking with kill-proof writer monitors and
      staleness sweeps;
    * `Tidemark.Sweeper` — a supervised process that sweeps a tracker every interval and
      forwards its events;
    * `Tidemark.BatchBuffer` — many producers, one sink (a plain `receive` loop woken by
      `{:tidemark_batch_ready, buffer}` messages), a stop that hands back what the sink did not
      acknowledge (blocking, or asynchronous with the report as a message).

  Every function is a NIF call that returns in well under a millisecond; anything that can take
  longer runs on a dirty scheduler (see `Tidemark.Native`).
  """

  @typedoc "A position in the source log: `{tx, op}`, ordered by `tx` then `op`."
  @type offset :: {non_neg_integer(), non_neg_integer()}

  @typedoc """
  Why a call was refused: the `tidemark_status` names of `include/tidemark.h`, lower-cased
  (`:offset_regressed`, `:unknown_writer`, `:evicted_writer`, `:full`, `:stopping`, `:closed`,
  `:empty`, ...).
  """
  @type reason :: atom()

  @doc "The native library's version string."
  @spec native_version() :: String.t()
  def native_version, do: List.to_string(Tidemark.Native.version())
end
