// /vision/architecture: the ViT map, drawn by architecture_map.js from GET /api/vision/architecture.
import { readState } from "./common.js";
import { initArchitecture } from "./architecture_map.js";

initArchitecture("vision", readState({ model: "", node: "" })); // node: the block whose details are shown
