"""Re-pose a photo through a served champion (`make serve`): python serve_client.py PHOTO POSE.json OUT.png

POSE.json: {"keypoints": [[x, y], ... 18 OpenPose points, -1 missing], "size": [H, W]} of the target
pose; add "source_keypoints" for the photo's own pose (else the server's pose extra finds it).
"""
import base64
import json
import sys
import urllib.error
import urllib.request

URL = "http://127.0.0.1:5001/invocations"


def repose(photo: str, pose: dict, url: str = URL) -> bytes:
    with open(photo, "rb") as fh:
        row = {"source_image": base64.b64encode(fh.read()).decode(),
               "target_keypoints": json.dumps(pose["keypoints"]), "target_size": json.dumps(pose["size"])}
    if "source_keypoints" in pose:
        row["source_keypoints"] = json.dumps(pose["source_keypoints"])
    body = json.dumps({"dataframe_records": [row]}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return base64.b64decode(json.load(response)["predictions"][0]["image"])
    except urllib.error.HTTPError as err:  # 400: the last line of the message names the column
        raise SystemExit(f"HTTP {err.code}: {json.load(err)['message'].splitlines()[-1]}") from None


if __name__ == "__main__":
    photo, pose_file, out = sys.argv[1:4]
    with open(pose_file) as fh:
        image = repose(photo, json.load(fh), *sys.argv[4:5])
    with open(out, "wb") as png:  # only once the service has answered: a refusal leaves no empty file
        png.write(image)
    print(f"wrote {out}")
