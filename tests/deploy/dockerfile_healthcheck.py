#!/usr/bin/env python3
"""Prints the script of a Dockerfile's exec-form `HEALTHCHECK ... CMD ["bash", "-c", SCRIPT]`
with the image's HTTP port 8000 replaced by PORT, so that it can run against a server
listening elsewhere (tests/integration/bundle_test.sh, tools/check_image_build_noble.sh).

    dockerfile_healthcheck.py DOCKERFILE PORT
"""
import json
import re
import sys


def main(dockerfile, port):
    text = open(dockerfile).read().replace("\\\n", " ")  # join continuation lines
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.M)
    if not match:
        raise SystemExit(f"{dockerfile}: no exec-form HEALTHCHECK CMD")
    cmd = json.loads(match.group(1))
    if cmd[:2] != ["bash", "-c"] or len(cmd) != 3:
        raise SystemExit(f"{dockerfile}: the HEALTHCHECK is not [\"bash\", \"-c\", SCRIPT]: {cmd}")
    print(cmd[2].replace("/8000", "/" + port))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
