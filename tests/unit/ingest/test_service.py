"""The pipeline's pure helpers: the sender an HL7 message is archived under, and which database errors are a lost
connection (answered 503, the sender to send again) rather than a fault here (500)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors
from sqlalchemy.exc import OperationalError, ProgrammingError

from services.ingest.service import hl7_sender
from shared.db import connection_lost
from tests.fixtures.ingest import messages


@pytest.mark.parametrize(("content", "sender"), [
    (messages.adt("A01").encode(), "PAS@RR8"),
    (b"MSH|^~\\&|CERNER^2.16.840.1^ISO|RX1^^|SCR|ICS|20240301101500||ADT^A01|C1|P|2.4", "CERNER@RX1"),
    (b"MSH|^~\\&| iPM |RX1|SCR|ICS|20240301101500||ADT^A01|C1|P|2.9", "iPM@RX1"),  # a version refused later
    (b"MSH#^~\\&#PAS#RX1#SCR", "PAS@RX1"),  # the message's own separators
    (b"MSH|^~\\&|P\\T\\S|RX1", "P&S@RX1"),  # escapes read as escapes
    (b"\r\nMSH|^~\\&|PAS||SCR", "PAS"),  # no MSH-4: refused later, but its application is known
    (b"MSH|^~\\&||RX1|SCR", "@RX1"),
    (b"MSH|^~\\&|PAS|RX1|||||||||||||UNICODE UTF-32\rPID|||1", "PAS@RX1"),  # a set refused later, at MSH-18
    (b"MSH|^~\\&|PAS|RX1|||||||||||||8859/1\rPID|||Zo\xeb", "PAS@RX1"),
    (b"MSH|^~\\&|" + b"x" * 300 + b"|RX1", "x" * 128),  # what the archive column holds
    (b"MSH|^~\\&||", None),
    (b"MSH|^~\\&|PA\x00S|RX1", None),  # PostgreSQL text holds no NUL
    (b"MSH|^~|PAS|RX1", None),  # not the four encoding characters
    (b"PID|||1", None),
    (b"garbage", None),
    (b"", None),
    ("MSH|^~\\&|PAS|RX1\r".encode("utf-16"), None),
])
def test_an_hl7_message_is_archived_under_its_sending_application_at_its_sending_facility(content, sender) -> None:
    assert hl7_sender(content) == sender


def _wrapped(error: Exception, *, invalidated: bool = False) -> OperationalError:
    return OperationalError("SELECT 1", None, error, connection_invalidated=invalidated)


@pytest.mark.parametrize(("exc", "lost"), [
    (_wrapped(psycopg.OperationalError("server closed the connection unexpectedly"), invalidated=True), True),
    (_wrapped(errors.AdminShutdown("terminating connection due to administrator command")), True),
    (errors.AdminShutdown("terminating connection due to administrator command"), True),  # psycopg's own (COPY)
    (_wrapped(errors.CannotConnectNow("the database system is starting up")), True),
    (_wrapped(errors.ConnectionFailure("could not send data to server")), True),
    (errors.SqlclientUnableToEstablishSqlconnection("no"), True),
    (_wrapped(errors.QueryCanceled("canceling statement due to statement timeout")), False),
    (_wrapped(errors.DiskFull("could not extend file")), False),
    (_wrapped(psycopg.OperationalError("a client-side fault on a healthy connection")), False),
    (ProgrammingError("SELECT 1", None, errors.UndefinedTable('relation "search_param" does not exist')), False),
    (RuntimeError("a bug"), False),
])
def test_only_a_lost_connection_is_a_transient_database_fault(exc, lost) -> None:
    assert connection_lost(exc) is lost


def test_a_connection_that_could_not_be_made_is_lost() -> None:
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect("host=127.0.0.1 port=1 dbname=scr user=scr connect_timeout=2")
    assert connection_lost(_wrapped(refused.value))
