// Where live sessions get their grant: the service decides (BROWSER_LIVE_MODE, read from
// /api/client-config as `live_mode`). "token": a temporary token for AssemblyAI itself;
// "relay": a relay token for this service's /v3/ws and /v1/ws. Both answers have the same
// shape ({token, websocket_url, ...}), so the views need nothing else.
export function grantPath(config, kind) {
  const relay = config?.live_mode === "relay";
  return `${relay ? "/api/relay/tokens" : "/api/tokens"}/${kind}`;
}
