// comfyui-gpen: shows the pack's warnings (nodes/comfy_bridge.py, warn_user) as toasts in ComfyUI's frontend.
// The server sends {message, node} as the "gpen.warning" event to the client that queued the prompt: things that
// change the result without stopping it (a face index that does not exist, a model made for another mode).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EVENT = "gpen.warning";
const LIFE_MS = 10000;

function nodeTitle(id) {
  const node = id == null ? null : app.graph?.getNodeById?.(id);  // ids are looked up as object keys: "5" or 5
  return node?.title ? `${node.title} (#${id})` : id == null ? "GPEN" : `GPEN node #${id}`;
}

app.registerExtension({
  name: "comfyui-gpen.warnings",
  setup() {
    api.addEventListener(EVENT, ({ detail }) => {
      const message = String(detail?.message ?? "");
      const toast = app.extensionManager?.toast;
      if (toast?.add) {
        toast.add({ severity: "warn", summary: nodeTitle(detail?.node), detail: message, life: LIFE_MS });
      } else {  // an older frontend without the toast API
        console.warn(`[comfyui-gpen] ${nodeTitle(detail?.node)}: ${message}`);
      }
    });
  },
});
