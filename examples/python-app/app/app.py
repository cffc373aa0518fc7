"""The Python example: a small web app on Bottle.

The dependencies (requirements.txt) are in the base image under /opt/deps;
this folder is the app layer that changes on every deploy.
"""

import os
import platform

import bottle

app = bottle.Bottle()


@app.get("/")
def index():
    return f"hello from python-app (Bottle {bottle.__version__}, Python {platform.python_version()})\n"


@app.get("/healthz")
def healthz():
    return "ok\n"


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=int(os.environ.get("PORT", "8000")))
