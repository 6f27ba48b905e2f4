"""The Gradio UI of HERMES Studio (player, live plots, chat, controls, sessions).

Rules for this package: it never touches tensors (it reads hermes.telemetry events),
render functions are pure (events in, figure out) and tested without a browser, and
per-session engines live in a dict keyed by ``request.session_hash``. Until the UI lands,
``app.py`` runs the command-line demo.
"""
