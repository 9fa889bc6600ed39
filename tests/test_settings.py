"""Jenkins settings: from the environment or an owner-only file, never leaking the token."""

from __future__ import annotations

import pytest

from profiler.pipeline.settings import DEFAULT_JOB, SettingsError, load_settings

TOKEN = "11a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7"
ENV = {"JENKINS_URL": "http://127.0.0.1:8080", "JENKINS_USER": "admin", "JENKINS_TOKEN": TOKEN}


def _file(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "jenkins.ini"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_environment_wins_and_the_token_never_shows():
    s = load_settings(ENV)
    assert (s.url, s.user, s.token, s.job, s.source) == (ENV["JENKINS_URL"], "admin", TOKEN, DEFAULT_JOB, "environment")
    assert TOKEN not in repr(s) and TOKEN not in str(s)


def test_owner_only_file(tmp_path):
    url = "https://ecr.example/jenkins"
    path = _file(tmp_path, f"[jenkins]\nurl = {url}\nuser = bot\ntoken = {TOKEN}\njob = nx-prof\n")
    s = load_settings({}, config=path)
    assert (s.url, s.user, s.token, s.job, s.source) == (url, "bot", TOKEN, "nx-prof", str(path))
    assert load_settings({}, config=path, job="other").job == "other"


@pytest.mark.parametrize(
    ("text", "mode", "words"),
    [
        (f"[jenkins]\nurl = http://h\nuser = u\ntoken = {TOKEN}\n", 0o644, ["chmod 600"]),
        (f"[other]\nurl = http://h\nuser = u\ntoken = {TOKEN}\n", 0o600, ["no [jenkins] section"]),
        ("[jenkins]\nurl = http://h\nuser = u\n", 0o600, ["lacks token"]),
        (f"[jenkins]\nurl = ftp://h\nuser = u\ntoken = {TOKEN}\n", 0o600, ["http(s)://"]),
        (f"[jenkins]\nurl = http://u:{TOKEN}@h\nuser = u\ntoken = {TOKEN}\n", 0o600, ["not in the URL"]),
        (f"not an ini file {TOKEN}\n", 0o600, ["not a valid INI file"]),
    ],
)
def test_unsafe_or_broken_files_are_refused_without_echoing_the_token(tmp_path, text, mode, words):
    with pytest.raises(SettingsError) as info:
        load_settings({}, config=_file(tmp_path, text, mode))
    for word in words:
        assert word in str(info.value)
    assert TOKEN not in str(info.value)


def test_no_settings_at_all_says_how_to_give_them(tmp_path):
    with pytest.raises(SettingsError, match="JENKINS_URL, JENKINS_USER and JENKINS_TOKEN"):
        load_settings({"WAAP_JENKINS_CONFIG": str(tmp_path / "missing.ini")})
