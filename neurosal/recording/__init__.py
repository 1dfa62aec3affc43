r"""Recordings: one HDF5 file per run, in the SONATA layout, streamed to disk in chunks.

Layout (SONATA spike and frame-report files, plus neurosal's run metadata)::

    /                          attrs: magic = 0x0A7A (uint32), version = [0, 1] (uint32)
    /spikes/<layer>/timestamps float64 [n_spikes], attr units = "ms"
    /spikes/<layer>/node_ids   uint64  [n_spikes]
    /spikes/<layer>            attr sorting: HDF5 enum {none: 0, by_id: 1, by_time: 2} = by_time
    /report/<layer>.<var>/data                 float32 [n_times, n_values], chunked, attr units
    /report/<layer>.<var>/mapping/node_ids     uint64 [N]
    /report/<layer>.<var>/mapping/index_pointers  uint64 [N + 1]
    /report/<layer>.<var>/mapping/element_ids  uint32 [n_values]
    /report/<layer>.<var>/mapping/time         float64 [start, stop, dt], attr units = "ms"
    /neurosal                  attrs: complete, format, config, network, devices, seed, coding,
                               dt_ms, steps, versions (JSON strings where structured)
    /neurosal/samples          int64  dataset indices of the recorded samples
    /neurosal/labels           int64  their labels (when known)

**Batch axis.** A population holds one layer for all recorded samples; the node id of
neuron ``i`` of the ``s``-th recorded sample is ``s * n_neurons + i`` (attributes
``n_neurons`` and ``samples`` on each population group say how to unfold it).
:meth:`Recording.spike_trains` and :meth:`Recording.trace` do the unfolding.

**Crash safety.** The recorder writes to ``<out>.partial`` and flushes after every chunk;
``/neurosal`` says ``complete = False`` until the run ends, and only then is the file
renamed to ``<out>``. A run that dies leaves no file at ``<out>`` (an older file there is
untouched) and a ``.partial`` file that says it is incomplete. An existing ``<out>`` is
replaced only with ``overwrite=True``.

* :mod:`.layout` — constants of the layout, :func:`versions`;
* :mod:`.writer` — :class:`Recorder`;
* :mod:`.reader` — :func:`open`, :class:`Recording`.

May import: :mod:`neurosal.files`.
"""

from .layout import FORMAT, MAGIC, SORTING, UNITS, VERSION, RecordingError, versions
from .reader import MAX_BYTES, Recording, open  # noqa: A004 - the API name
from .writer import Recorder

__all__ = ["MAGIC", "VERSION", "SORTING", "Recorder", "Recording", "RecordingError", "open", "versions", "UNITS",
           "FORMAT", "MAX_BYTES"]
