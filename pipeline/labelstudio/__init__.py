"""Everything Label Studio: its labeling config, its JSON exports read into the hub, its server, and
predictions written back as regions.

Modules:

* :mod:`~pipeline.labelstudio.config`: the labeling config XML -> :class:`LabelConfig`
  (``parse_label_config``).
* :mod:`~pipeline.labelstudio.layout`: a project's config against a model's keypoints and classes
  (``match_label_config`` -> ``ProjectLayout``; used by ``fdpose serve``).
* :mod:`~pipeline.labelstudio.reader`: exports (a file, or a project read live) into the hub
  (``read_labelstudio_export``, ``read_labelstudio_live``); its docstring holds every reading rule.
  It builds on :mod:`~pipeline.labelstudio.results` (which annotations count, their regions),
  :mod:`~pipeline.labelstudio.instances` (regions -> hub instances),
  :mod:`~pipeline.labelstudio.geometry` (frames, rotated rectangles) and
  :mod:`~pipeline.labelstudio.images` (image references -> files, from a folder or the server).
* :mod:`~pipeline.labelstudio.client`: the server: the SDK client, one-line API errors, export
  snapshots, ``API_KEY_ENV`` and the one authenticated :class:`ImageFetcher` (convert and serve).
* :mod:`~pipeline.labelstudio.predictions`: hub instances -> ``result`` regions
  (``instance_regions``, ``RegionStyle``, ``prediction_result``) and ``upload_predictions``.

Nothing is imported here, so importing one module (``convert`` reads exports) costs only its own imports.
"""
