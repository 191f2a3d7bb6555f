"""The OpenAPI document is the truth (issue 14, item 17): schemathesis fuzzes every
operation of a seeded server (the API and the web interface as `serve` builds them,
served by uvicorn on loopback) and fails on any 5xx, any status code the document does
not declare, any body, header or content type that does not match it, a 405 without
the right `Allow`, a missing required header not refused, and an operation that
declares a key but answers without one - once as a default server (reads open) and once
with --read-requires-key, each fuzzed against the document it serves.

Not checked: `positive_data_acceptance` (a request valid by the document accepted with a
2xx): some rules cannot be written in OpenAPI - `near` and `km` only together, an area
for class counts, the parameters of each device kind, a name already taken - so a
valid-looking request may rightly get a 409 or a 422 (declared, with its body).

Bounded for a 2-core machine: EXAMPLES generated requests per operation and mode
(positive, negative) beside schemathesis's own boundary cases, no shrinking, and a time
budget per operation (BUDGET_S in all) after which its remaining examples are not sent.
"""

import time

import hypothesis
import pytest
import sqlalchemy as sa

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.specs.openapi.checks import (allow_header_conformance,  # noqa: E402
                                               positive_data_acceptance)

from tlc_jax.live import api as API  # noqa: E402
from tlc_jax.live import apidoc  # noqa: E402
from tlc_jax.live import apikeys as K  # noqa: E402
from tlc_jax.live import db as DB  # noqa: E402
from tlc_jax.live import registry as R  # noqa: E402
from tlc_jax.live import webui  # noqa: E402
from tlc_jax.live.policy import DevicePolicy  # noqa: E402

from live_helpers import FRAMES, Server  # noqa: E402

EXAMPLES = 10
BUDGET_S = 15.0  # Per configuration, shared equally by its operations.
T0 = 1_800_000_000.0
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    suppress_health_check=list(hypothesis.HealthCheck))


class Seeded:
    """A server over a database with devices (a camera with credentials, a folder
    device under the allowed root), a model version, frames with their images and
    predictions, and an admin key (no rate limit in the way)."""

    def __init__(self, root, read_requires_key: bool):
        self.db = DB.open_database(f"sqlite:///{root / 'live.db'}")
        frames, folder = root / "frames", root / "cams"
        folder.mkdir()
        with self.db.transaction() as session:
            self.key = K.create_key(session, "fuzz", ["admin"], rate_per_min=10**6)
            R.upsert(session, [
                R.DeviceSpec("cam-1", "http_snapshot", {"url": "http://cam.example/x.jpg"},
                             {"password": "secret"}, latitude=40.42, longitude=-86.91,
                             city="Lafayette", country="US"),
                R.DeviceSpec("folder-1", "folder", {"path": str(folder)},
                             latitude=48.85, longitude=2.35, city="Paris")])
            model = DB.ModelVersionRow(name="tiny", run_dir="/runs/tiny", step=7,
                                       class_names=["car", "person"])
            session.add(model)
            session.flush()
            device_id = session.scalar(sa.select(DB.DeviceRow.id)
                                       .where(DB.DeviceRow.name == "cam-1"))
            (frames / str(device_id)).mkdir(parents=True)
            for i, data in enumerate(FRAMES):
                path = f"{device_id}/{i}.jpg"
                (frames / path).write_bytes(data)
                frame = DB.FrameRow(device_id=device_id, captured_at=T0 + i, path=path,
                                    sha256="0" * 64, size=len(data), width=16, height=12)
                session.add(frame)
                session.flush()
                session.add(DB.PredictionRow(frame_id=frame.id, model_version_id=model.id,
                                             top_class="car", top_probability=0.75,
                                             topk=[["car", 0.75], ["person", 0.25]]))
        self.app = webui.mount_web(API.create_app(
            self.db, frames_root=frames, read_requires_key=read_requires_key,
            policy=DevicePolicy.from_options(folder_roots=[str(folder)]),
            anonymous_rate_per_min=10**6, health=lambda: {"uptime_s": 1.0}))
        self.server = Server(self.app)
        self.spent: dict[str, float] = {}  # Seconds per operation.

    def close(self):
        self.server.stop()
        self.db.dispose()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    made = {}

    def server(read_requires_key: bool) -> Seeded:
        if read_requires_key not in made:
            made[read_requires_key] = Seeded(tmp_path_factory.mktemp("contract"),
                                             read_requires_key)
        return made[read_requires_key]

    yield server
    for seeded in made.values():
        seeded.close()


# The documents `python -m tlc_jax.live openapi [--read-requires-key]` prints;
# test_the_servers_serve_the_documents_fuzzed checks that the servers serve these.
OPEN = schemathesis.openapi.from_dict(apidoc.openapi_spec(read_requires_key=False))
PRIVATE = schemathesis.openapi.from_dict(apidoc.openapi_spec(read_requires_key=True))
OPERATIONS = len(API.routes())


def fuzz(case, seeded: Seeded) -> None:
    label = case.operation.label
    started = time.monotonic()
    if seeded.spent.get(label, 0.0) > BUDGET_S / OPERATIONS:
        return  # This operation's share of the budget is spent.
    excluded = [positive_data_acceptance]
    if case.path == "/api/v1/devices/import":
        # /devices/{name} takes "import" as a name too: GET, PATCH and DELETE of
        # /devices/import are served (the device "import"), and Allow rightly says so.
        excluded.append(allow_header_conformance)
    try:
        case.call_and_validate(base_url=seeded.server.url,
                               headers={"Authorization": f"Bearer {seeded.key}"},
                               excluded_checks=excluded)
    finally:
        seeded.spent[label] = seeded.spent.get(label, 0.0) + time.monotonic() - started


@pytest.mark.slow
@OPEN.parametrize()
@SETTINGS
def test_every_operation_keeps_to_the_document(case, servers):
    fuzz(case, servers(False))


@pytest.mark.slow
@PRIVATE.parametrize()
@SETTINGS
def test_every_operation_keeps_to_the_document_with_read_keys(case, servers):
    fuzz(case, servers(True))


def test_the_servers_serve_the_documents_fuzzed(servers):
    import httpx

    for read_requires_key, schema in ((False, OPEN), (True, PRIVATE)):
        seeded = servers(read_requires_key)
        served = httpx.get(seeded.server.url + "/openapi.json").json()
        assert served == schema.raw_schema
        # The fuzzed operations are all of them, none left out.
        assert len(list(schema.get_all_operations())) == OPERATIONS
