// /diffusion/architecture: the Stable Diffusion map, drawn by architecture_map.js from GET /api/diffusion/architecture.
import { readState } from "./common.js";
import { initArchitecture } from "./architecture_map.js";

initArchitecture("diffusion", readState({ model: "", node: "" })); // node: the block whose details are shown
