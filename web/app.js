// Placeholder: the dashboard lands with the dashboard issue.
const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.type === "status") document.getElementById("status").textContent = m.message; };
