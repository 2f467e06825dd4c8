from __future__ import annotations

from resilient_db.conf import parse_settings
from resilient_db.health.targets import Target, build_targets

BASE = {"HOST": "db-a", "PORT": "5432", "NAME": "app", "USER": "u", "PASSWORD": "s3cret",
        "OPTIONS": {"sslmode": "prefer"}}
DATABASES = {"default": BASE, "peer": {**BASE, "HOST": "db-c", "PORT": "6432"}}


def cfg(peers: list[object]):  # type: ignore[no-untyped-def]
    parsed, problems = parse_settings({"DATABASES": {"default": {"PEERS": peers}}})
    assert problems == []
    return parsed.alias("default")


def test_own_server_comes_first_then_peers() -> None:
    targets = build_targets(
        "default", BASE,
        cfg(["postgres://db-b:6432", {"HOST": "db-d", "OPTIONS": {"sslmode": "disable"}}, "peer"]),
        DATABASES,
    )
    assert [t.label for t in targets] == [
        "db-a:5432/app", "db-b:6432/app", "db-d:5432/app", "db-c:6432/app",
    ]
    assert [t.index for t in targets] == [0, 1, 2, 3]
    merged = targets[2].settings_dict(BASE)
    assert merged["HOST"] == "db-d"
    assert merged["OPTIONS"] == {"sslmode": "disable"}
    assert merged["PASSWORD"] == "s3cret"


def test_labels_and_reprs_never_show_passwords() -> None:
    targets = build_targets("default", BASE, cfg(["postgres://u:hunter2@db-b:6432"]), DATABASES)
    for t in targets:
        assert "hunter2" not in t.label + repr(t) + t.key
        assert "s3cret" not in t.label + repr(t) + t.key


def test_same_server_under_two_aliases_is_two_targets() -> None:
    a = Target("default", "h", "1", "db")
    b = Target("other", "h", "1", "db")
    assert a != b and a.key != b.key


def test_duplicate_and_unknown_alias_peers_are_dropped() -> None:
    targets = build_targets(
        "default", BASE, cfg([{"HOST": "db-a", "PORT": "5432"}, "missing"]), DATABASES
    )
    assert len(targets) == 1


def test_a_peer_key_given_as_none_leaves_the_alias_value() -> None:
    # The checks accept None for OPTIONS and PORT ("not set"): the alias's own
    # value applies, at run time too (the settings fuzz found a TypeError).
    targets = build_targets(
        "default", BASE,
        cfg([{"HOST": "db-b", "OPTIONS": None}, {"HOST": "db-e", "PORT": None}]),
        DATABASES,
    )
    assert [t.label for t in targets] == ["db-a:5432/app", "db-b:5432/app", "db-e:5432/app"]
    for target in targets[1:]:
        merged = target.settings_dict(BASE)
        assert merged["OPTIONS"] == {"sslmode": "prefer"}
        assert merged["PORT"] == "5432"
