"""The Gradio UI of HERMES Studio (player, live plots, chat, controls, sessions).

    python app.py            # http://127.0.0.1:7860

Modules, one job each:
- settings: the operator's limits and model allowlist (Settings) and the user's controls
  (Controls, defaults read from hermes.config.HermesConfig and the hermes policy);
- sources: what can play (bundled examples, checked uploads, the webcam) and upload clean-up;
- playback: pacing: which frames are due at the player's time, webcam sampling at fps;
- session: one browser session's engines, ingest, questions with ground truth, study, trace;
- store: the sessions by request.session_hash (lazy, capped, idle ones freed);
- render: pure plotly figures from telemetry events; study: the Study tab's committed figures;
- ui: the gr.Blocks, its handlers (one session-lookup/error wrapper) and the thread adapter.

Rules for this package: it never touches tensors (it reads hermes.telemetry events),
render functions are pure (events in, figure out) and tested without a browser, no module
here imports analysis/ (the app's study is hermes.studies.mechanistic), and per-session
engines live in a dict keyed by ``request.session_hash``.
"""
