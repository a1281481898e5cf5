document.getElementById("app").textContent = "QNP";
