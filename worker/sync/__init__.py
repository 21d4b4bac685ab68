"""What the ``av_sync`` detector measures, one concept a module (the detector itself, its
options and its defects are :mod:`worker.detectors.av_sync`):

* sync marks: :mod:`~worker.sync.flash` (the white picture), :mod:`~worker.sync.beep` (the
  tone), :mod:`~worker.sync.marks` (pairing them) and :mod:`~worker.sync.presence` (whether
  pairs are marks);
* :mod:`~worker.sync.timestamps`: the divergence of the demuxed audio and video timelines;
* programme content without marks: :mod:`~worker.sync.content` (the method and its streaming
  windows) over :mod:`~worker.sync.audio_onsets`, :mod:`~worker.sync.video_onsets` and
  :mod:`~worker.sync.correlation`;
* :mod:`~worker.sync.fit` (line and hinge fits) and :mod:`~worker.sync.episodes` (the runs the
  detector builds into defects);
* when the content and timestamp measurements are a defect: :mod:`~worker.sync.content_judge`
  and :mod:`~worker.sync.pts_judge`, with :mod:`~worker.sync.findings` (the findings' keys and
  their construction, shared with the marks).
"""
