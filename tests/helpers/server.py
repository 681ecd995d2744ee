"""An app served by uvicorn on a real socket in a thread, for tests that talk to it as a client would."""

import threading
import time
from contextlib import contextmanager


@contextmanager
def running_server(app, **options):
    """Serve `app` on 127.0.0.1 (a free port unless `port` is given) until the block ends; yields the port."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, **{"host": "127.0.0.1", "port": 0, "log_level": "warning",
                                                    **options}))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
