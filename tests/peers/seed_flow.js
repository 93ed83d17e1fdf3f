// The seed article's Node.js flow with mqtt.js: regnwl over mqtts, then connwl over plain mqtt,
// both on the one legacy-style port. usage: node seed_flow.js PORT CA PK PS DN REGION
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const mqtt = require("mqtt");

const [port, caFile, productKey, productSecret, deviceName, regionId] = process.argv.slice(2);
const host = `${productKey}.iot-as-mqtt.${regionId}.aliyuncs.com`;
const trustedCA = fs.readFileSync(caFile);
setTimeout(() => fail("timed out"), 60000).unref();

function fail(why) {
  console.error("seed_flow: " + why);
  process.exit(1);
}

// the article's sign: HMAC-SHA1 over the sorted names and values, keyed with the secret
function signHmacSha1(content, secret) {
  const text = Object.keys(content).sort().map((k) => k + content[k]).join("");
  return crypto.createHmac("sha1", secret).update(text).digest("hex");
}

function getRegisterOptions(productInfo, rootCA) {
  const random = Date.now();
  const content = { deviceName: productInfo.deviceName, productKey: productInfo.productKey, random };
  return {
    clientId: Date.now() + "|securemode=2,authType=regnwl,random=" + random + ",signmethod=hmacsha1|",
    username: productInfo.deviceName + "&" + productInfo.productKey,
    password: signHmacSha1(content, productInfo.productSecret),
    port: Number(port),
    host: "127.0.0.1", // the article's host name, resolved to loopback: SNI and check use it
    servername: host,
    protocol: "mqtts",
    ca: rootCA,
    keepalive: 120,
    reconnectPeriod: 0,
  };
}

function deviceOnline(opts) {
  const options = {
    clientId: opts.clientId + "|securemode=-2,authType=connwl|",
    username: opts.deviceName + "&" + opts.productKey,
    password: opts.deviceToken,
    port: Number(port),
    host: "127.0.0.1",
    protocol: "mqtt",
    keepalive: 120,
    reconnectPeriod: 0,
  };
  const deviceClient = mqtt.connect(options);
  deviceClient.on("error", (e) => fail("login: " + e.message));
  deviceClient.on("connect", () => {
    const topic = `/${opts.productKey}/${opts.deviceName}/user/update`;
    deviceClient.publish(topic, "sdk client " + Date.now(), { qos: 1 }, (err) => {
      if (err) fail("publish: " + err.message);
      console.log(JSON.stringify({ clientId: opts.clientId, published: topic }));
      deviceClient.end(false, () => process.exit(0));
    });
  });
}

const productInfo = { productKey, productSecret, regionId, deviceName };
const registerClient = mqtt.connect(getRegisterOptions(productInfo, trustedCA));
registerClient.on("error", (e) => fail("register: " + e.message));
registerClient.on("message", (topic, message) => {
  if (topic === "/ext/regnwl") {
    registerClient.end();
    deviceOnline(JSON.parse(message));
  }
});
