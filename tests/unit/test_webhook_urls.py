"""Which URLs a webhook may reach: http(s) only, and with the operator's default no
loopback, private, link-local or reserved address (SSRF), however it is spelled."""

import pytest

from tunesmith.settings import settings
from tunesmith.webhooks.sender import retry_delay
from tunesmith.webhooks.urls import RefusedURL, check_url


@pytest.fixture
def private_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "webhook_allow_private_urls", False)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x", "http://localhost:8080/", "http://10.1.2.3/", "http://192.168.0.1/",
    "http://172.16.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
    "http://[fd00::1]/", "http://0.0.0.0/", "http://2130706433/", "http://0x7f000001/",
    "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/",
])
def test_private_addresses_are_refused(private_refused: None, url: str) -> None:
    with pytest.raises(RefusedURL, match="private or local"):
        check_url(url)


def test_a_public_address_is_allowed(private_refused: None) -> None:
    check_url("https://93.184.215.14/hooks")


@pytest.mark.parametrize("url", ["ftp://93.184.215.14/", "file:///etc/passwd",
                                 "gopher://93.184.215.14/", "http:///x",
                                 "http://user:pw@93.184.215.14/", "http://93.184.215.14:99999/"])
def test_other_schemes_and_malformed_urls_are_refused(private_refused: None, url: str) -> None:
    with pytest.raises(RefusedURL):
        check_url(url)


def test_the_operator_may_allow_private_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "webhook_allow_private_urls", True)
    check_url("http://127.0.0.1:9000/hooks")
    with pytest.raises(RefusedURL):
        check_url("ftp://127.0.0.1/")


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "webhook_retry_base_seconds", 10.0)
    monkeypatch.setattr(settings, "webhook_retry_max_seconds", 3600.0)
    for attempts, ceiling in [(1, 10), (2, 20), (3, 40), (10, 3600), (40, 3600)]:
        delays = {retry_delay(attempts) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempts, delays)
        assert len(delays) > 1  # jittered


def test_secrets_are_sealed_with_the_operators_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet
    from standardwebhooks import Webhook

    from tunesmith.webhooks.signing_secrets import new_secret, seal, unseal

    secret = new_secret()
    Webhook(secret)  # the form Standard Webhooks libraries take
    monkeypatch.setattr(settings, "webhook_secret_key", None)
    assert seal(secret) == secret
    monkeypatch.setattr(settings, "webhook_secret_key", Fernet.generate_key().decode())
    sealed = seal(secret)
    assert secret not in sealed and secret[6:] not in sealed
    assert unseal(sealed) == secret
    monkeypatch.setattr(settings, "webhook_secret_key", None)
    with pytest.raises(RuntimeError, match="TUNESMITH_WEBHOOK_SECRET_KEY"):
        unseal(sealed)
