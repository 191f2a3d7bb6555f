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
