"""Baseline (b): the official huaweicloudsdkdcs client in a sequential loop, as Huawei's sample
does. Usage: official_sdk.py URL PROJECT IDS_FILE"""

import sys

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkdcs.v2 import DcsClient, DeleteCenterTaskRequest

url, project, path = sys.argv[1], sys.argv[2], sys.argv[3]
with open(path) as f:
    ids = [line.strip() for line in f if line.strip()]
config = HttpConfig.get_default_config()
client = (
    DcsClient.new_builder()
    .with_credentials(BasicCredentials("BENCHAK", "BENCHSK", project))
    .with_endpoints([url])
    .with_http_config(config)
    .build()
)
ok = 0
for task_id in ids:
    client.delete_center_task(DeleteCenterTaskRequest(task_id=task_id))
    ok += 1
print(ok)
