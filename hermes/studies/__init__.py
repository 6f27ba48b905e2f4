"""Measurements the app and `analysis/` share (numpy in, numpy out; no gradio, no plotting).

    from hermes.studies.mechanistic import study_stream, summarise, distance_edges, hermes_tiers
    from hermes.studies.replay import feed, replay

- `mechanistic`: where each layer's question attention falls in a FIFO cache, by distance from the
  newest video token (the paper's first picture); `python -m analysis.mechanistic` writes the
  committed figure, the app's Study tab runs it on the session's stream.
- `results`: what a study's result files are named (`result_name`), for analysis/ and the app.
- `replay`: ingest a recorded stream up to each question's time, then hand the question back to ask
  (`feed`: all of it).
"""
