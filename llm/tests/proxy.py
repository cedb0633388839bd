"""A TCP proxy in front of the test database that can be cut: the database "goes away" for
whoever connects through it (established connections are dropped, new ones refused), while
the tests keep their own direct connections. It works the same against the embedded server
(a Unix socket) and a system PostgreSQL (TCP), so the failure is real wherever CI runs."""

import contextlib
import selectors
import socket
import threading

from django.db import connections

from llm.tests.workers import database_url


class DatabaseProxy:
    def __init__(self, alias: str = "default"):
        db = connections[alias].settings_dict
        host, port = db["HOST"] or "localhost", int(db["PORT"] or 5432)
        if host.startswith("/"):
            self._target = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self._target = (socket.AF_INET, (host, port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = database_url(alias, host="127.0.0.1", port=self.port)
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._cut.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # cut
            family, address = self._target
            server = socket.socket(family, socket.SOCK_STREAM)
            try:
                server.connect(address)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut.is_set():
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while not self._cut.is_set():
                for key, _ in selector.select(timeout=0.2):
                    try:
                        data = key.fileobj.recv(65536)
                        if not data:
                            raise OSError("closed")
                        peers[key.fileobj].sendall(data)
                    except OSError:
                        self._close(client, server)
                        return

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        """The database goes away: every connection through the proxy drops at once and new
        ones are refused."""
        with self._lock:
            self._cut.set()
            self._close(self._listener, *self._sockets)
