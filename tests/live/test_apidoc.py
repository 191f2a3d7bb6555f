"""docs/API.md is the API's current reference (regenerated from the OpenAPI document)."""

from tlc_jax.live import apidoc

from helpers import ROOT

DOC = ROOT / "docs" / "API.md"


def test_api_reference_is_current():
    spec = apidoc.openapi_spec()
    text = apidoc.openapi_markdown(spec)
    assert DOC.read_text() == text, (
        "docs/API.md is out of date: python -m tlc_jax.live openapi --markdown > "
        "docs/API.md")
    for path, methods in spec["paths"].items():
        for method in methods:
            assert f"## `{method.upper()} {path}`" in text
    assert "### `DeviceCreate`" in text and "| `latitude` |" in text
    # Reads are open on a default server: the reference says the key is optional, and
    # the document of a server run with --read-requires-key says it is needed.
    assert "## `GET /api/v1/devices`\n\nSearch Devices. Key: optional" in text
    private = apidoc.openapi_markdown(apidoc.openapi_spec(read_requires_key=True))
    assert "## `GET /api/v1/devices`\n\nSearch Devices. Key: read." in private
    assert "| 422 | `InputErrors` |" in text and "### `InputError`" in text
