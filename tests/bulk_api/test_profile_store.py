"""Get User's profile store lives on disk, one database per gateway, removed when the gateway stops."""

from __future__ import annotations

from inflow.producers.bulk_api.profiles import open_database
from tests.bulk_api.test_get_user import export, profile, publish


def test_profiles_are_kept_on_disk_not_in_the_gateways_memory(
    gateway_factory, catalogue_topics, producer_factory, serde, tmp_path
):
    root = tmp_path / "profiles"
    abandoned = root / "crashed-gateway"
    root.mkdir()
    open_database(abandoned, 1).close()  # left behind by a gateway that did not stop cleanly
    publish(producer_factory, serde, catalogue_topics, [profile(f"uid-{i}", f"c{i}") for i in range(50)])
    gw = gateway_factory(profile_store_dir=root, profile_cache_mb=1)
    assert not abandoned.exists()
    [database] = list(root.iterdir())
    assert (database / "CURRENT").is_file()
    assert not any(isinstance(v, dict) and len(v) >= 50 for v in vars(gw.gateway.profiles).values())
    found = export(gw, [{"identifier_type": "customer_id", "identifier": "c49"}]).json()["data"]["users"]
    assert found[0]["user_attributes"]["moengage_id"] == "uid-49"
    gw.gateway.profiles.stop()
    assert not database.exists()
