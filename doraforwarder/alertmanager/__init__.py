"""The Alertmanager source: webhook notifications into incidents.

Pure parts: :mod:`.matchers` (which alerts are incidents), :mod:`.webhook`
(the notification format, version 4), :mod:`.episodes` (which incident an
alert or group is in, across retries and re-fires). The edge:
:mod:`.receiver` (stages what changed, exactly once, through the shared
incident staging).
"""
