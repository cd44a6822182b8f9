"""``fastws echo --jwt-*``: the command checks a real JWT (made by PyJWT) on
every upgrade; a third-party client (websockets) connects with and without one."""
from __future__ import annotations

import time

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import InvalidStatus

from cliutil import Command, run

jwt = pytest.importorskip("jwt")

SECRET = "s" * 40


def _token(**claims):
    return jwt.encode({"sub": "ann", "exp": int(time.time()) + 300, **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize("api", ["listener", "handler"])
def test_echo_with_jwt_secret(api):
    with Command("echo", "--port", "0", "--api", api, "--jwt-secret", SECRET, "--jwt-issuer", "me",
                 "--log-level", "warning") as cmd:
        url = f"ws://127.0.0.1:{cmd.port}"
        with pytest.raises(InvalidStatus) as info:
            ws_sync.connect(url, open_timeout=10)
        assert info.value.response.status_code == 401
        assert info.value.response.headers["WWW-Authenticate"].startswith("Bearer")
        with pytest.raises(InvalidStatus) as info:  # wrong issuer
            ws_sync.connect(url, open_timeout=10,
                            additional_headers={"Authorization": f"Bearer {_token(iss='other')}"})
        assert info.value.response.status_code == 401
        with ws_sync.connect(url + f"?token={_token(iss='me')}", open_timeout=10) as ws:
            ws.send("hi")
            assert ws.recv(timeout=10) == "hi"


def test_jwt_flags_from_the_environment_and_bad_values(tmp_path):
    with Command("echo", "--port", "0", "--log-level", "warning",
                 env={"FASTWS_JWT_SECRET": SECRET}) as cmd:
        with pytest.raises(InvalidStatus) as info:
            ws_sync.connect(f"ws://127.0.0.1:{cmd.port}", open_timeout=10)
        assert info.value.response.status_code == 401
    # one error line and exit status 2, never a traceback
    done = run("echo", "--port", "0", "--jwt-secret", "short")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    done = run("echo", "--port", "0", "--jwt-public-key", str(tmp_path / "missing.pem"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
