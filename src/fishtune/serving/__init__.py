"""Serving a fine-tuned model over HTTP (stage ``serve``): a web page and an OpenAI-shaped speech API.

* :mod:`.engine`: the model, codec and voices, loaded once; text -> samples on one worker thread;
* :mod:`.scheduler`: the bounded queue in front of that worker (503 when full, per-request timeout);
* :mod:`.speech`: parsing and checking a request (JSON or the page's form) with one-line reasons;
* :mod:`.encode`: samples -> wav, flac, mp3, opus or raw pcm bytes;
* :mod:`.app`: the Starlette application (routes, token check), run by uvicorn.
"""
