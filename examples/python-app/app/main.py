"""The example app: what changes on every deploy, layered on the cached base."""

import sys

sys.path.insert(0, "/opt/deps")

print("hello from the app layer")
