"""Test double of ComfyUI's ``server``: a ``PromptServer.instance`` that records what is sent to the frontend."""


class PromptServer:
    instance = None

    def __init__(self):
        self.client_id = "test-client"  # the client that queued the prompt (ComfyUI sets it per prompt)
        self.messages = []  # (event, data, sid) in the order sent

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data, sid))


PromptServer.instance = PromptServer()
