"""HERMES Studio engine: streaming video understanding with the KV cache as a hierarchical memory.

    import hermes
    engine = hermes.load_engine("random-tiny", policy="fifo", budget=512)
    frames, times = hermes.video.read_video("clip.mp4", fps=2)
    engine.ingest(frames, times)
    print(engine.ask("what is on the screen now ?").text)

The engine never imports gradio; the app lives in app/.
"""

from hermes import policies, video
from hermes.config import HermesConfig
from hermes.engine import Answer, StreamEngine, load_engine
from hermes.errors import HermesError, VideoError

__all__ = ["Answer", "HermesConfig", "HermesError", "StreamEngine", "VideoError", "load_engine", "policies", "video"]
