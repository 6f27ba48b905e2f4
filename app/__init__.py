"""The Gradio UI of HERMES Studio (player, live plots, chat, controls, sessions).

    python app.py            # http://127.0.0.1:7860

Modules: settings (limits and the model allowlist, one place), session (one browser
session's engines, pacing, ground truth, trace; no gradio), render (pure plotly figures
from telemetry events), ui (the gr.Blocks and its handlers).

Rules for this package: it never touches tensors (it reads hermes.telemetry events),
render functions are pure (events in, figure out) and tested without a browser, and
per-session engines live in a dict keyed by ``request.session_hash``.
"""
