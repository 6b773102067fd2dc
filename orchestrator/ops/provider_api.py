"""Provider refresh through the providers' HTTP APIs, the alternative to their command-line tools.

A provider's API is configured by naming where its key is (an environment variable or a file,
never the key itself in a settings file); its base URL is a setting too, so a node can be pointed
at a proxy or, in tests, at a loopback server. When a provider's API is configured it is used,
else its CLI; when neither, a 503 names the settings that are missing.

- Vast.ai: `GET <vast_api_url>/instances/` with `Authorization: Bearer <key>` answers
  `{"instances": [...]}`, the same instance objects `vastai show instances --raw` prints.
- Tailscale: `GET <tailscale_api_url>/tailnet/<tailnet>/devices` with the key as a bearer token
  answers `{"devices": [...]}`: the API's own device objects (not `tailscale status --json`'s).
- AWS: EC2 `DescribeInstances` through the Query API, signed with Signature Version 4, answers
  XML; it is read into the same shape the CLI's JSON has, so one function makes hosts of both.

Requests never follow redirects (a redirect would carry the key to another host), and the key
never appears in an error. What survives a failure: nothing here keeps state; the caller's
registry keeps the provider's previous hosts and records the error.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from orchestrator.errors import Unavailable
from orchestrator.ops.registry import COMMANDS, Host, aws_hosts, parse_vast, provider_argv, run_provider

EC2_API_VERSION = "2016-11-15"
MAX_AWS_PAGES = 100  # DescribeInstances pages followed through nextToken before giving up
MAX_ERROR_BODY_CHARS = 300


@dataclass(frozen=True)
class ApiCall:
    url: str
    headers: dict[str, str]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises the 3xx as an HTTPError


_opener = urllib.request.build_opener(_NoRedirects)


def get(call: ApiCall, timeout_s: float, title: str) -> str:
    """The body of a 200 answer; anything else is a 503 with the status and the start of the body."""
    request = urllib.request.Request(call.url, headers=call.headers, method="GET")
    try:
        with _opener.open(request, timeout=timeout_s) as answer:
            return answer.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", errors="replace").strip().replace("\n", " ")
        raise Unavailable(f"{title}: the API answered {exc.code}: {body[:MAX_ERROR_BODY_CHARS]}") from None
    except (urllib.error.URLError, OSError) as exc:  # refused, unresolvable, timed out
        reason = getattr(exc, "reason", exc)
        raise Unavailable(f"{title}: the API at {_origin(call.url)} is unreachable: {reason}") from None


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- keys ------------------------------------------------------------------------------------
def read_key(title: str, env_setting: str, env_name: str | None, file_setting: str | None = None,
             file_path: Path | None = None) -> str:
    """The key from the environment variable or file the settings name; a named source that holds
    nothing is a 503 saying which."""
    if env_name:
        value = os.environ.get(env_name, "").strip()
        if not value:
            raise Unavailable(f"{title}: {env_setting} names ${env_name}, which is not set on this node",
                              missing=env_setting)
        return value
    try:
        value = Path(file_path).expanduser().read_text().strip()
    except OSError as exc:
        raise Unavailable(f"{title}: {file_setting} {file_path} cannot be read: {exc.strerror}",
                          missing=file_setting) from None
    if not value:
        raise Unavailable(f"{title}: {file_setting} {file_path} is empty", missing=file_setting)
    return value


# --- Vast.ai ---------------------------------------------------------------------------------
def vast_call(base_url: str, key: str) -> ApiCall:
    return ApiCall(f"{base_url.rstrip('/')}/instances/", {"Authorization": f"Bearer {key}", "Accept": "application/json"})


# --- Tailscale -------------------------------------------------------------------------------
def tailscale_call(base_url: str, tailnet: str, key: str) -> ApiCall:
    return ApiCall(f"{base_url.rstrip('/')}/tailnet/{urllib.parse.quote(tailnet, safe='')}/devices",
                   {"Authorization": f"Bearer {key}", "Accept": "application/json"})


def parse_tailscale_devices(text: str, gateway_port: int) -> list[Host]:
    """The API's device list: id, name (the MagicDNS name), hostname, addresses, os, lastSeen and
    connectedToControl (whether the device is connected to the coordination server now)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"tailscale: the answer is not JSON: {exc}") from None
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, list):
        raise ValueError("tailscale: expected an object with devices[]")
    hosts = []
    for item in devices:
        if not isinstance(item, dict) or not (item.get("nodeId") or item.get("id")):
            raise ValueError("tailscale: every device needs an id")
        ips = [ip for ip in item.get("addresses") or [] if isinstance(ip, str)]
        address = next((ip for ip in ips if ":" not in ip), ips[0] if ips else None)
        hosts.append(Host(
            provider="tailscale", host_id=str(item.get("nodeId") or item["id"]),
            name=str(item.get("hostname") or item.get("name") or item.get("id")), address=address,
            state="online" if item.get("connectedToControl") else "offline",
            ports={"gateway": gateway_port} if address else {},
            details={"dns_name": item.get("name"), "os": item.get("os"), "last_seen": item.get("lastSeen"),
                     "tailscale_ips": ips}))
    return hosts


# --- AWS -------------------------------------------------------------------------------------
def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def sigv4_headers(url: str, region: str, service: str, access_key: str, secret_key: str, now: dt.datetime,
                  session_token: str | None = None) -> dict[str, str]:
    """Signature Version 4 for a GET with an empty body: the headers to send (Host is urllib's,
    the same `netloc` signed here)."""
    parts = urllib.parse.urlsplit(url)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    query = "&".join(f"{_quote(k)}={_quote(v)}"
                     for k, v in sorted(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
    signed = {"host": parts.netloc, "x-amz-date": amz_date}
    if session_token:
        signed["x-amz-security-token"] = session_token
    names = sorted(signed)
    canonical = "\n".join(["GET", _quote_path(parts.path or "/"), query,
                           "".join(f"{n}:{signed[n].strip()}\n" for n in names), ";".join(names),
                           hashlib.sha256(b"").hexdigest()])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {"X-Amz-Date": amz_date, "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                                        f"SignedHeaders={';'.join(names)}, Signature={signature}"}
    if session_token:
        headers["X-Amz-Security-Token"] = session_token
    return headers


def _quote_path(path: str) -> str:
    return urllib.parse.quote(path, safe="/-_.~")


def aws_call(endpoint: str, region: str, access_key: str, secret_key: str, session_token: str | None,
             now: dt.datetime, next_token: str | None = None) -> ApiCall:
    params = {"Action": "DescribeInstances", "Version": EC2_API_VERSION}
    if next_token:
        params["NextToken"] = next_token
    url = f"{endpoint.rstrip('/')}/?{urllib.parse.urlencode(sorted(params.items()), quote_via=urllib.parse.quote)}"
    return ApiCall(url, sigv4_headers(url, region, "ec2", access_key, secret_key, now, session_token))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # the EC2 namespace changes with the API version; names do not


def _child(element, name: str):
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element, *path: str) -> str | None:
    for name in path:
        element = _child(element, name) if element is not None else None
    return element.text if element is not None else None


def read_describe_instances_xml(text: str) -> tuple[dict[str, Any], str | None]:
    """The XML answer in the CLI's JSON shape (`Reservations[].Instances[]`), and its nextToken."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise ValueError(f"aws: the answer is not XML: {exc}") from None
    if _local(root.tag) != "DescribeInstancesResponse":
        raise ValueError(f"aws: expected DescribeInstancesResponse, got {_local(root.tag)}")
    reservations = []
    for reservation in _child(root, "reservationSet") if _child(root, "reservationSet") is not None else []:
        instances = []
        for item in _child(reservation, "instancesSet") if _child(reservation, "instancesSet") is not None else []:
            tags = _child(item, "tagSet")
            instances.append({
                "InstanceId": _text(item, "instanceId"), "InstanceType": _text(item, "instanceType"),
                "State": {"Name": _text(item, "instanceState", "name")},
                "PrivateIpAddress": _text(item, "privateIpAddress"), "PublicIpAddress": _text(item, "ipAddress"),
                "Placement": {"AvailabilityZone": _text(item, "placement", "availabilityZone")},
                "Tags": [{"Key": _text(t, "key"), "Value": _text(t, "value")} for t in (tags if tags is not None else [])]})
        reservations.append({"ReservationId": _text(reservation, "reservationId"), "Instances": instances})
    return {"Reservations": reservations}, _text(root, "nextToken")


# --- choosing the API or the CLI ---------------------------------------------------------------
API_SETTINGS = {"vast": ("vast_api_key_env", "vast_api_key_file"),
                "tailscale": ("tailscale_api_key_env", "tailscale_api_key_file"),
                "aws": ("aws_access_key_id_env", "aws_secret_access_key_env")}


def api_configured(provider: str, settings) -> bool:
    return any(getattr(settings, name) for name in API_SETTINGS[provider])


def _parse(provider: str, parse: Callable[[str, int], list[Host]], text: str, gateway_port: int) -> list[Host]:
    try:
        return parse(text, gateway_port)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise Unavailable(f"{COMMANDS[provider].title}: unexpected answer from the API: {exc}",
                          provider=provider) from None


def _vast(settings) -> list[Host]:
    key = read_key("Vast.ai", "vast_api_key_env", settings.vast_api_key_env, "vast_api_key_file",
                   settings.vast_api_key_file)
    text = get(vast_call(settings.vast_api_url, key), settings.provider_timeout_s, "Vast.ai")
    return _parse("vast", parse_vast, text, settings.port)


def _tailscale(settings) -> list[Host]:
    key = read_key("Tailscale", "tailscale_api_key_env", settings.tailscale_api_key_env, "tailscale_api_key_file",
                   settings.tailscale_api_key_file)
    text = get(tailscale_call(settings.tailscale_api_url, settings.tailscale_tailnet, key),
               settings.provider_timeout_s, "Tailscale")
    return _parse("tailscale", parse_tailscale_devices, text, settings.port)


def _aws(settings, now: Callable[[], dt.datetime]) -> list[Host]:
    missing = [name for name in ("aws_access_key_id_env", "aws_secret_access_key_env", "aws_region")
               if not getattr(settings, name)]
    if missing:
        raise Unavailable(f"AWS: the EC2 API also needs {', '.join(missing)}", provider="aws", missing=missing[0])
    access_key = read_key("AWS", "aws_access_key_id_env", settings.aws_access_key_id_env)
    secret_key = read_key("AWS", "aws_secret_access_key_env", settings.aws_secret_access_key_env)
    token = None  # temporary credentials come with a session token; long-term keys do not
    if settings.aws_session_token_env:
        token = read_key("AWS", "aws_session_token_env", settings.aws_session_token_env)
    endpoint = settings.aws_api_url or f"https://ec2.{settings.aws_region}.amazonaws.com"
    reservations: list[dict[str, Any]] = []
    next_token = None
    for _ in range(MAX_AWS_PAGES):
        call = aws_call(endpoint, settings.aws_region, access_key, secret_key, token, now(), next_token)
        text = get(call, settings.provider_timeout_s, "AWS")
        try:
            doc, next_token = read_describe_instances_xml(text)
            reservations += doc["Reservations"]
            if not next_token:
                return aws_hosts({"Reservations": reservations}, settings.port)
        except ValueError as exc:
            raise Unavailable(f"AWS: unexpected answer from the API: {exc}", provider="aws") from None
    raise Unavailable(f"AWS: DescribeInstances still had more after {MAX_AWS_PAGES} pages", provider="aws")


def fetch_hosts(provider: str, settings, extra_cli_args: tuple[str, ...] = (),
                now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> list[Host]:
    """The provider's hosts through its HTTP API when configured, else its CLI (503 when neither)."""
    if api_configured(provider, settings):
        try:
            if provider == "vast":
                return _vast(settings)
            if provider == "tailscale":
                return _tailscale(settings)
            return _aws(settings, now)
        except Unavailable as exc:
            exc.extra.setdefault("provider", provider)
            raise
    argv = provider_argv(provider, getattr(settings, f"{provider}_cli"), extra_cli_args)
    return run_provider(provider, argv, settings.provider_timeout_s, settings.port)
