// /text/architecture: the GPT-2 map, drawn by architecture_map.js from GET /api/text/architecture.
import { readState } from "./common.js";
import { initArchitecture } from "./architecture_map.js";

initArchitecture("text", readState({ model: "", node: "" })); // node: the block whose details are shown
