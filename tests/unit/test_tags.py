import re

import pytest

from service.domain.tags import (
    classify,
    compile_matcher,
    is_git_sha,
    matches_any,
    semver_key,
    valid_repository,
    valid_tag,
    validate_spec,
)

pytestmark = pytest.mark.unit

ENVS = ("develop", "staging", "production")
HEX40 = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        ("v1.2.3", True),
        ("latest", True),
        ("_underscore", True),
        ("A-Z.ok_9", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        (".hidden", False),
        ("-dash", False),
        ("1.2.3+build", False),
        ("has/slash", False),
        ("has space", False),
        ("tag\n", False),
        ("é", False),
    ],
)
def test_valid_tag(tag, valid):
    assert valid_tag(tag) is valid


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("app", True),
        ("team/app", True),
        ("team-a/svc/api", True),
        ("a.b_c__d---e", True),
        ("a" * 255, True),
        ("a" * 256, False),
        ("Team/app", False),
        ("team//app", False),
        ("/app", False),
        ("app/", False),
        ("-app", False),
        ("app-", False),
        ("a___b", False),
        ("a..b", False),
        ("", False),
        ("app\n", False),
    ],
)
def test_valid_repository(name, valid):
    assert valid_repository(name) is valid


def test_long_bad_names_are_refused():
    # The worst inputs for the name grammar (how long they take is `make bench`'s
    # regex_worst_case row): correct answers here.
    assert valid_repository("a-" * 120 + "!") is False
    assert valid_repository("a" * 250 + "!") is False
    assert valid_repository("a-" * 120 + "a") is True


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("production", "environment"),
        ("develop", "environment"),
        ("latest", "latest"),
        ("Latest", "other"),
        ("1.2.3", "semver"),
        ("v1.2.3", "semver"),
        ("v1.2.3-rc.1+build.5", "semver"),
        ("1.0.0-alpha.beta", "semver"),
        ("V1.2.3", "other"),
        ("vv1.2.3", "other"),
        ("1.2", "other"),
        ("01.2.3", "other"),
        ("1.0.0-01", "other"),
        ("v", "other"),
        ("git-sha-abcdef0", "git-sha"),
        ("sha-abcdef0", "git-sha"),
        ("sha-" + HEX40, "git-sha"),
        ("git-sha-" + HEX40, "git-sha"),
        (HEX40, "git-sha"),
        ("sha-abcdef", "other"),  # 6 hex
        ("sha-" + HEX40 + "8", "other"),  # 41 hex
        (HEX40[:39], "other"),
        (HEX40 + "8", "other"),
        ("sha-ABCDEF0", "other"),
        (HEX40.upper(), "other"),
        ("sha-abcdefg", "other"),
        ("pr-42", "other"),
    ],
)
def test_classify(tag, expected):
    assert classify(tag, ENVS) == expected


def test_classify_environment_wins_over_other_classes():
    assert classify("latest", ("latest",)) == "environment"
    assert classify("prod", ()) == "other"


def test_semver_precedence_semver_org_example():
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    assert sorted(reversed(ordered), key=semver_key) == ordered
    assert all(semver_key(a) < semver_key(b) for a, b in zip(ordered, ordered[1:], strict=False))


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.9.0", "1.10.0"),
        ("v1.2.3", "1.2.4"),
        ("1.2.3-rc.1", "v1.2.3"),
        ("2.0.0-rc.2", "2.0.0-rc.10"),
        ("1.0.0-2", "1.0.0-a"),
    ],
)
def test_semver_key_orders(lower, higher):
    assert semver_key(lower) < semver_key(higher)


def test_semver_key_ignores_build_metadata_and_prefix():
    assert semver_key("1.0.0+build.1") == semver_key("1.0.0+build.2")
    assert semver_key("v1.0.0") == semver_key("1.0.0")
    assert sorted(["1.0.0+b", "1.0.0-rc.1+a"], key=semver_key) == ["1.0.0-rc.1+a", "1.0.0+b"]


@pytest.mark.parametrize("tag", ["latest", "sha-abcdef0", "1.2", ""])
def test_semver_key_rejects_non_semver(tag):
    with pytest.raises(ValueError, match="not a semantic version"):
        semver_key(tag)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("git-sha-1234567", True), ("sha-123456", False), ("1234567", False)],
)
def test_is_git_sha(tag, expected):
    assert is_git_sha(tag) is expected


@pytest.mark.parametrize(
    ("spec", "tag", "expected"),
    [
        ("semver", "v1.2.3", True),
        ("semver", "latest", False),
        ("git-sha", "sha-abcdef0", True),
        ("latest", "latest", True),
        ("environment", "staging", True),
        ("environment", "qa", False),
        ("other", "pr-1", True),
        ("other", "1.2.3", False),
        ("regex:^pr-[0-9]+$", "pr-42", True),
        ("regex:^pr-[0-9]+$", "pr-42a", False),
        ("regex:^tmp-", "tmp-x", True),
        ("regex:tmp", "my-tmp-x", True),  # search semantics: users anchor themselves
        ("regex:^tmp-", "my-tmp-x", False),
        ("regex:(?i)^release$", "RELEASE", True),
        ("regex:.", "a" * 129, False),  # longer than any registry tag: never matched
    ],
)
def test_compile_matcher(spec, tag, expected):
    assert compile_matcher(spec)(tag, ENVS) is expected


def test_compile_matcher_is_cached():
    assert compile_matcher("regex:^x$") is compile_matcher("regex:^x$")


def test_matches_any():
    assert matches_any("pr-1", ["semver", "regex:^pr-"], ENVS) is True
    assert matches_any("pr-1", ["semver", "git-sha"], ENVS) is False
    assert matches_any("pr-1", [], ENVS) is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("semvr", "unknown tag class 'semvr'"),
        ("", "unknown tag class ''"),
        ("regex:", "empty regex"),
        ("regex:[", "invalid regex"),
        ("regex:(", "invalid regex"),
        ("regex:" + "a" * 257, "longer than 256"),
        ("regex:(a)\\1", "invalid regex '(a)\\\\1'"),  # backreference
        ("regex:^(?=v)v1$", "invalid regex '^(?=v)v1$'"),  # lookahead
        ("regex:(?<!tmp)-x", "invalid regex '(?<!tmp)-x'"),  # lookbehind
        ("regex:a{1001}", "invalid regex 'a{1001}'"),  # RE2's repeat limit
    ],
)
def test_invalid_specs_are_rejected(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_spec(spec)


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("^pr-[0-9]+$", "pr-17", True),
        ("^v[0-9]+(\\.[0-9]+){2}(-rc\\.[0-9]+)?$", "v1.2.3-rc.4", True),
        ("^feature-([a-z0-9]+-)*[a-z0-9]+$", "feature-a-b-c", True),
        ("^feature-([a-z0-9]+-)*[a-z0-9]+$", "feature-a-b-", False),
        ("^(feat|fix)-", "fix-x", True),
        # Shapes that backtrack exponentially in a backtracking engine: RE2 accepts them
        # and answers correctly on the inputs that make `re` explode.
        ("^(aa|a)*$", "a" * 40, True),
        ("^(aa|a)*$", "a" * 40 + "b", False),
        ("^(a+)+$", "a" * 40 + "!", False),
        ("^(a|a?)+$", "a" * 60 + "!", False),
        ("^(\\w+\\s?)*$", "a" * 60 + "!", False),
        ("(x+x+)+y", "x" * 60, False),
        ("(x+x+)+y", "x" * 60 + "y", True),
    ],
)
def test_regexes_match_with_re2_semantics(pattern, tag, expected):
    assert compile_matcher("regex:" + pattern)(tag, ENVS) is expected


def test_user_regexes_are_compiled_by_re2():
    """The linear-time engine is what evaluates a policy's regex, not Python's `re`."""
    import re2

    from service.domain.tags import _compile_regex

    assert isinstance(_compile_regex("^(aa|a)*$"), re2._Regexp)
    # Python's `re` accepts a backreference; RE2 cannot run one in linear time and refuses.
    assert re.compile(r"(a)\1") is not None
    with pytest.raises(ValueError, match=r"RE2 syntax"):
        validate_spec(r"regex:(a)\1")
