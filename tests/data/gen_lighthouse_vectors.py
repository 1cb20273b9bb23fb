#!/usr/bin/env python3
"""Generates the `lighthouse_cases` of tests/data/tc3_vectors.json with Tencent's official SDK.

Not run at build or test time: run it by hand to regenerate the cases, e.g.

    python3 -m venv /tmp/tcsdk
    /tmp/tcsdk/bin/pip install tencentcloud-sdk-python-common tencentcloud-sdk-python-lighthouse
    /tmp/tcsdk/bin/python tests/data/gen_lighthouse_vectors.py tests/data/tc3_vectors.json

The SDK's own LighthouseClient builds and signs each request (its clock fixed, its transport
replaced by a capture that never touches the network); the canonical request and string to sign
are then recomputed here from the captured request, and the script asserts that they give the
SDK's signature, so every stored value is tied to the SDK's.
"""
import hashlib
import hmac
import json
import sys
from datetime import datetime, timezone
from unittest import mock

import tencentcloud
from tencentcloud.common import abstract_client, credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.lighthouse.v20200324 import lighthouse_client, models

CASES = [
    # name, secret id, secret key, token, region, timestamp, host (None: SDK default), action, params
    ("lh-vnc-guangzhou", "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
     None, "ap-guangzhou", 1710408600, None, "DescribeInstanceVncUrl", {"InstanceId": "lhins-a1b2c3d4"}),
    ("lh-vnc-utc-midnight-before", "AKIDMcIYpeYvj0o7lHljhNFReoiIKatkuF2U", "U9dmkO3PZ9rLe9oj3Ria5Fob4OqkJWkC",
     None, "ap-shanghai", 1710460799, None, "DescribeInstanceVncUrl", {"InstanceId": "lhins-0000zzzz"}),
    ("lh-vnc-utc-midnight-after", "AKIDMcIYpeYvj0o7lHljhNFReoiIKatkuF2U", "U9dmkO3PZ9rLe9oj3Ria5Fob4OqkJWkC",
     None, "ap-shanghai", 1710460800, None, "DescribeInstanceVncUrl", {"InstanceId": "lhins-0000zzzz"}),
    ("lh-vnc-session-token", "AKIDtmpTemporaryKeyIdEXAMPLE0001", "tmpSecretKeyEXAMPLEtmpSecretKey01",
     "sessionTokenEXAMPLE", "ap-singapore", 1735689600, None, "DescribeInstanceVncUrl",
     {"InstanceId": "lhins-9x8y7w6v"}),
    ("lh-vnc-loopback-host-port", "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
     None, "ap-guangzhou", 1700000000, "127.0.0.1:8443", "DescribeInstanceVncUrl",
     {"InstanceId": "lhins-a1b2c3d4"}),
    ("lh-describe-instances-page", "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE", "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
     None, "ap-guangzhou", 1710408600, None, "DescribeInstances", {"Offset": 0, "Limit": 100}),
    ("lh-describe-instances-ids", "AKIDMcIYpeYvj0o7lHljhNFReoiIKatkuF2U", "U9dmkO3PZ9rLe9oj3Ria5Fob4OqkJWkC",
     None, "ap-beijing", 1720000000, None, "DescribeInstances",
     {"InstanceIds": ["lhins-a1b2c3d4", "lhins-e5f6g7h8"]}),
]


def hmac256(key, msg):
    return hmac.new(key, msg.encode("utf8"), hashlib.sha256).digest()


def independent(secret_key, timestamp, service, content_type, host, payload):
    date = datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    canonical = "POST\n/\n\n" + f"content-type:{content_type.lower()}\nhost:{host.lower()}\n" + \
        "\ncontent-type;host\n" + hashlib.sha256(payload.encode("utf8")).hexdigest()
    sts = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n" + hashlib.sha256(canonical.encode("utf8")).hexdigest()
    k = hmac256(("TC3" + secret_key).encode("utf8"), date)
    k = hmac256(k, service)
    k = hmac256(k, "tc3_request")
    sig = hmac.new(k, sts.encode("utf8"), hashlib.sha256).hexdigest()
    return {"utc_date": date, "credential_scope": scope, "canonical_request": canonical,
            "string_to_sign": sts, "signature": sig}


def run(case):
    name, sid, skey, token, region, ts, host, action, params = case
    cred = credential.Credential(sid, skey, token)
    http = HttpProfile()
    http.reqMethod = "POST"
    if host:
        http.endpoint = host
    profile = ClientProfile(httpProfile=http)
    profile.language = "en-US"
    profile.disable_region_breaker = True
    client = lighthouse_client.LighthouseClient(cred, region, profile)
    captured = {}

    def capture(req):
        captured["req"] = req
        raise RuntimeError("captured")

    with mock.patch.object(abstract_client.time, "time", return_value=float(ts)), \
            mock.patch.object(client.request, "send_request", side_effect=capture):
        try:
            client.call(action, params)
        except Exception as e:  # the capture stops the call before any network
            if "captured" not in str(e):
                raise
    req = captured["req"]
    h = req.header
    payload = req.data
    mine = independent(skey, ts, "lighthouse", h["Content-Type"], h["Host"], payload)
    sdk_sig = h["Authorization"].rsplit("Signature=", 1)[1]
    assert mine["signature"] == sdk_sig, name
    assert h["X-TC-Version"] == "2020-03-24", h
    assert f"/{mine['utc_date']}/lighthouse/tc3_request," in h["Authorization"], h
    return {
        "name": name,
        "secret_id": sid,
        "secret_key": skey,
        "token": token,
        "region": region,
        "timestamp": ts,
        "host": h["Host"],
        "service": "lighthouse",
        "action": h["X-TC-Action"],
        "version": h["X-TC-Version"],
        "content_type": h["Content-Type"],
        "payload": payload,
        "authorization": h["Authorization"],
        "sdk_headers": {k: v for k, v in h.items() if k != "X-TC-TraceId"},
        "intermediate": mine,
    }


def main(path):
    with open(path) as f:
        data = json.load(f)
    data["lighthouse_sdk"] = {
        "tencentcloud.__version__": tencentcloud.__version__,
        "generator": "tests/data/gen_lighthouse_vectors.py",
        "client": "tencentcloud.lighthouse.v20200324.LighthouseClient",
    }
    data["lighthouse_cases"] = [run(c) for c in CASES]
    with open(path, "w") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
