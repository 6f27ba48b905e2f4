"""HERMES Studio: `python app.py` (what `make demo` runs; also the Hugging Face Space entry).

Serves the Gradio app on http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
override; a Space sets them). The model defaults to the bundled hermes-tiny; on a Space,
HERMES_MODEL=llava-hf/llava-onevision-qwen2-0.5b-ov-hf adds (and selects) the real model.

Memory: before the server's threads start, glibc is held to `HERMES_MALLOC_ARENAS` malloc
arenas (2; MALLOC_ARENA_MAX, when set, is glibc's own and wins), and the store hands a freed
session's memory back (`HERMES_TRIM_MEMORY`): see app.store and analysis/bench_memory.
"""

from __future__ import annotations

import os

from app.sources import list_examples
from app.store import limit_arenas
from app.ui import CSS, SETTINGS, build


def launch_kwargs() -> dict:
    return {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "css": CSS,
        "ssr_mode": False,
        "max_file_size": f"{SETTINGS.max_upload_mb}mb",
        "allowed_paths": sorted({str(p.parent) for p in list_examples().values()}),
        "show_error": False,
    }


def main() -> None:
    if "MALLOC_ARENA_MAX" not in os.environ:
        limit_arenas(SETTINGS.malloc_arenas)
    demo = build()
    demo.queue(default_concurrency_limit=SETTINGS.max_sessions, max_size=4 * SETTINGS.max_sessions)
    demo.launch(**launch_kwargs())


if __name__ == "__main__":
    main()
