"""``fdpose serve``: a Label Studio ML backend that pre-annotates keypoints and retrains from the
labelling UI.

Modules: :mod:`~pipeline.serve.protocol` (request bodies and errors), :mod:`~pipeline.serve.predictor`
(tasks to pre-annotations, their images from the Label Studio server only), :mod:`~pipeline.serve.models`
(the served model and its swap), :mod:`~pipeline.serve.state` (the work folder),
:mod:`~pipeline.serve.training` and :mod:`~pipeline.serve.job` (training requests and the training
process), :mod:`~pipeline.serve.app` (the endpoints), :mod:`~pipeline.serve.connect` (connecting a
running backend to a project), :mod:`~pipeline.serve.command` (the CLI). What is Label Studio's own
(its label config against the model, the server client and image fetcher, the region writer) lives in
:mod:`pipeline.labelstudio`.
"""
