"""The wire contract of the WebSocket endpoints: the frames a client sends (``inbound``) and
the frames the server sends (``outbound``). Shared by the gateway, the event log's render,
the pipeline's notices and the AsyncAPI document, so it belongs to none of them."""
