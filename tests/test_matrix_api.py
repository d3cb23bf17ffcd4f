"""The Matrix adapter's HTTP edge, offline: request builders, the bounded client, login and
registration against canned answers, and the shared cursor and filter."""

from __future__ import annotations

import httpx
import pytest

from imstore import ErrorCode, FetchOptions, IMError, Message, MessageType
from imstore.adapters._cursor import decode_cursor, encode_cursor
from imstore.adapters._filter import keeps, past_window
from imstore.adapters.matrix import Bounds, MatrixAdapter, MatrixError
from imstore.adapters.matrix import _requests as rq
from imstore.adapters.matrix._api import Api
from imstore.message import Direction

from .matrix_canned import BASE, ME, Homeserver, login_answer, run

# ------------------------------------------------------------------------------ builders


def test_builders_quote_every_variable_segment_and_do_no_io():
    req = rq.send_message("!r:hs", "t/1", {"body": "x"})
    assert req == ("PUT", "/_matrix/client/v3/rooms/%21r%3Ahs/send/m.room.message/t%2F1",
                   {"body": "x"})
    assert rq.resolve_alias("#a:hs").path.endswith("/directory/room/%23a%3Ahs")
    assert rq.messages("!r:hs", "b", 5, from_="tok").path.endswith("?dir=b&limit=5&from=tok")
    assert rq.room_account_data("@a:hs", "!r:hs", "x.y").method == "GET"
    assert rq.room_account_data("@a:hs", "!r:hs", "x.y", {"k": 1}).method == "PUT"
    assert rq.send_to_device("t", "1", {"@b:hs": {"k": 1}}).body == {
        "messages": {"@b:hs": {"*": {"k": 1}}}}
    assert rq.sync("{}", None, 0).path.count("since") == 0
    assert "since=s1" in rq.sync("{}", "s1", 0).path


@pytest.mark.parametrize("url, parts", [("mxc://hs/abc", ("hs", "abc")), ("http://x/y", None),
                                        ("mxc://hs", None), ("mxc://hs/a/b", None),
                                        ("mxc:///abc", None)])
def test_mxc_urls_are_split_or_refused(url: str, parts: tuple[str, str] | None):
    assert rq.split_mxc(url) == parts


# ------------------------------------------------------------------------- cursor, filter


def test_cursors_round_trip_and_refuse_anything_else():
    c = encode_cursor("h", "tok:with:colons", 5)
    assert decode_cursor(c, "h", str, int) == ["tok:with:colons", 5]
    for bad in (c + "!", "", "x" * 5000, encode_cursor("c", 1), encode_cursor("h", "t"),
                encode_cursor("h", 5, "t"), encode_cursor("h", True, 1), 7):
        with pytest.raises(IMError) as err:
            decode_cursor(bad, "h", str, int)
        assert err.value.code == ErrorCode.INVALID_PARAM


def _msg(t: int, sender: str = "bob", mtype: MessageType = MessageType.TEXT) -> Message:
    m = Message.text("alice", "x", sender=sender)
    m.type, m.server_time = mtype, t
    return m


def test_the_filter_keeps_types_sender_and_window_and_stops_past_it():
    opts = FetchOptions(types=(MessageType.TEXT,), sender="bob", start_time=10, end_time=20)
    assert keeps(_msg(15), opts)
    assert not keeps(_msg(15, sender="carol"), opts)
    assert not keeps(_msg(15, mtype=MessageType.IMAGE), opts)
    assert not keeps(_msg(21), opts) and not keeps(_msg(9), opts)
    assert keeps(_msg(10), opts) and keeps(_msg(20), opts)
    assert past_window(_msg(9), opts) and not past_window(_msg(21), opts)
    down = FetchOptions(direction=Direction.DOWN, start_time=10, end_time=20)
    assert past_window(_msg(21), down) and not past_window(_msg(9), down)
    assert keeps(_msg(1), FetchOptions()) and not past_window(_msg(1), FetchOptions())


# -------------------------------------------------------------------------- the client


def _api(handler, bounds: Bounds | None = None) -> tuple[Api, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Api(BASE, http, "tok", bounds), http


@pytest.mark.parametrize("status, errcode, code", [
    (429, "", ErrorCode.SERVER_BUSY), (502, "", ErrorCode.SERVER_UNKNOWN_ERROR),
    (401, "M_UNKNOWN_TOKEN", ErrorCode.USER_NOT_LOGIN), (413, "", ErrorCode.FILE_TOO_LARGE),
    (400, "M_BAD_JSON", ErrorCode.INVALID_PARAM), (403, "M_LIMIT_EXCEEDED", ErrorCode.SERVER_BUSY)])
def test_error_answers_map_to_error_codes(status: int, errcode: str, code: ErrorCode):
    async def main() -> None:
        api, http = _api(lambda r: httpx.Response(status, json={"errcode": errcode,
                                                                 "error": "no"}))
        with pytest.raises(MatrixError) as err:
            await api.call(rq.whoami())
        await http.aclose()
        assert (err.value.code, err.value.status, err.value.errcode) == (code, status, errcode)
    run(main())


def test_an_error_answer_that_is_not_json_keeps_its_text():
    async def main() -> None:
        api, http = _api(lambda r: httpx.Response(500, text="<html>down</html>"))
        with pytest.raises(MatrixError) as err:
            await api.call(rq.whoami())
        await http.aclose()
        assert "down" in err.value.description and err.value.errcode == ""
    run(main())


@pytest.mark.parametrize("exc, code", [(httpx.ConnectError("refused"), ErrorCode.NETWORK_ERROR),
                                       (httpx.ReadTimeout("slow"), ErrorCode.SERVER_TIMEOUT)])
def test_transport_failures_are_imerrors(exc: Exception, code: ErrorCode):
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    async def main() -> None:
        api, http = _api(fail)
        with pytest.raises(IMError) as err:
            await api.call(rq.whoami())
        await http.aclose()
        assert err.value.code == code
    run(main())


@pytest.mark.parametrize("answer", [b"[1, 2]", b"not json", b"\"str\"", b"{" * 100_000,
                                    b'{"a": NaN}', b'{"a": -Infinity}'])
def test_answers_that_are_not_json_objects_are_refused(answer: bytes):
    async def main() -> None:
        api, http = _api(lambda r: httpx.Response(200, content=answer))
        with pytest.raises(IMError) as err:
            await api.call(rq.whoami())
        await http.aclose()
        assert err.value.code == ErrorCode.SERVER_UNKNOWN_ERROR
    run(main())


def test_valid_answers_are_accepted_and_an_empty_body_is_an_empty_object():
    async def main() -> None:
        api, http = _api(lambda r: httpx.Response(200, json={"user_id": ME}))
        assert await api.call(rq.whoami()) == {"user_id": ME}
        api2, http2 = _api(lambda r: httpx.Response(200))
        assert await api2.call(rq.whoami()) == {}
        await http.aclose()
        await http2.aclose()
    run(main())


def test_an_answer_past_the_size_bound_is_refused_declared_or_streamed():
    async def chunks():
        for _ in range(100):
            yield b" " * 1000

    async def main() -> None:
        small = Bounds(max_answer_bytes=10_000)
        api, http = _api(lambda r: httpx.Response(200, json={"x": "y" * 20_000}), small)
        with pytest.raises(IMError) as err:
            await api.call(rq.whoami())
        assert err.value.code == ErrorCode.SERVER_UNKNOWN_ERROR
        api2, http2 = _api(lambda r: httpx.Response(200, content=chunks()), small)
        with pytest.raises(IMError):
            await api2.call(rq.whoami())
        await http.aclose()
        await http2.aclose()
    run(main())


# ------------------------------------------------------------------------ login, register


@pytest.mark.parametrize("answer", [
    {}, {"access_token": 1, "user_id": ME, "device_id": "D"},
    {"access_token": "t", "user_id": None, "device_id": "D"},
    {"access_token": "t", "user_id": "alice", "device_id": "D"},
    {"access_token": "t", "user_id": ME, "device_id": ["D"]},
    httpx.Response(200, content=b"[]"), httpx.Response(200, content=b"\xff\xfe"),
    httpx.Response(200, text="<html/>"), 500, 403, 429])
def test_login_raises_only_imerror_on_any_answer(answer):
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/login$", answer)
        with pytest.raises(IMError):
            await MatrixAdapter.login(BASE, "alice", "pw", http_transport=hs.transport)
    run(main())


def test_login_with_a_valid_answer_is_accepted_and_keeps_the_device():
    async def main() -> None:
        hs = Homeserver()
        hs.on("POST", r"/login$", login_answer())
        a = await MatrixAdapter.login(BASE, "Alice", "pw", device_id="DEV",
                                      http_transport=hs.transport)
        try:
            assert (a.user_id, a.mxid, a.device_id, a.api.token) == ("alice", ME, "DEV", "tok")
            body = hs.body(hs.calls("POST", "/login$")[0])
            assert body["identifier"]["user"] == "=41lice" and body["device_id"] == "DEV"
        finally:
            await a.close()
    run(main())


def test_register_with_the_shared_secret_and_through_open_registration():
    async def main() -> None:
        hs = Homeserver()
        hs.on("GET", r"/_synapse/admin/v1/register$", {"nonce": "n1"})
        hs.on("POST", r"/_synapse/admin/v1/register$", {"user_id": ME})
        assert await MatrixAdapter.register(BASE, "alice", "pw", shared_secret="s",
                                            http_transport=hs.transport) == ME
        mac = hs.body(hs.calls("POST", "admin/v1/register")[0])["mac"]
        assert len(mac) == 40
        hs.on("POST", r"/client/v3/register$",
              httpx.Response(401, json={"session": "S1", "flows": []}), {"user_id": ME})
        assert await MatrixAdapter.register(BASE, "alice", "pw",
                                            http_transport=hs.transport) == ME
        second = hs.body(hs.calls("POST", "v3/register$")[-1])
        assert second["auth"] == {"type": "m.login.dummy", "session": "S1"}
        hs.on("POST", r"/client/v3/register$", httpx.Response(403, json={"errcode": "M_FORBIDDEN"}))
        with pytest.raises(MatrixError):
            await MatrixAdapter.register(BASE, "alice", "pw", http_transport=hs.transport)
    run(main())


def test_an_initial_sync_is_never_asked_twice_the_same_way():
    # Synapse keeps an initial sync's answer two minutes under a key holding its timeout
    assert rq.fresh_timeout(1_000) != rq.fresh_timeout(1_001)
    assert all(rq.fresh_timeout(t) > 0 for t in (0, 86_399_999, 2**53))
