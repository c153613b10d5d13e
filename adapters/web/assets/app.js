import { start } from "./js/router.js";
start();
