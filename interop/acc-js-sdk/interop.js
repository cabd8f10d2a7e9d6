'use strict';
// Drives imsbridge with @adobe/acc-js-sdk, Adobe's own Campaign client, unmodified:
//
//   1. user-and-password mode: Logon, a makeSoapCall of nms:rtEvent#PushEvent, Logoff;
//   2. session-token mode, with "login/password" as the token: PushEvent;
//   3. a wrong password: the Logon must fail with Campaign's fault.
//
// Environment: IMSBRIDGE_URL, LOGON_LOGIN, LOGON_PASSWORD (a caller that logs on),
// TOKEN_LOGIN, TOKEN_PASSWORD (a caller that puts login/password in the session token).
// Prints one JSON line with what each step saw; exits 1 on any failure. No token is printed.

const sdk = require('@adobe/acc-js-sdk');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

async function pushEvent(client) {
  const event = { type: 'order', email: 'name@domain.com', ctx: { order: { id: '42' } } };
  const [plId] = await client.makeSoapCall(
    'nms:rtEvent', 'PushEvent', true,
    [{ name: 'domEvent', type: 'DOMElement', value: event }],
    [{ name: 'plId', type: 'int64' }],
    'SimpleJson');
  return plId;
}

async function main() {
  const url = env('IMSBRIDGE_URL');
  const report = {};

  // 1. User and password: the SDK calls xtk:session#Logon, then sends the session and security
  //    tokens it got with every call.
  const logonClient = await sdk.init(sdk.ConnectionParameters.ofUserAndPassword(
    url, env('LOGON_LOGIN'), env('LOGON_PASSWORD')));
  await logonClient.logon();
  const userInfo = logonClient.getSessionInfo('xml');
  report.logon = {
    logged: logonClient.isLogged(),
    login: sdk.DomUtil.findElement(userInfo, 'userInfo').getAttribute('login'),
    sessionTokenKind: logonClient._sessionToken.split('.')[0],
  };
  report.logon.plId = await pushEvent(logonClient);
  await logonClient.logoff();
  report.logon.loggedOff = !logonClient.isLogged();

  // 2. Session token "login/password": no Logon call; the token goes in every call.
  const tokenClient = await sdk.init(sdk.ConnectionParameters.ofSessionToken(
    url, `${env('TOKEN_LOGIN')}/${env('TOKEN_PASSWORD')}`));
  await tokenClient.logon();
  report.sessionToken = { plId: await pushEvent(tokenClient) };
  await tokenClient.logoff();

  // 3. A wrong password.
  const wrongClient = await sdk.init(sdk.ConnectionParameters.ofUserAndPassword(
    url, env('LOGON_LOGIN'), 'not-the-password'));
  try {
    await wrongClient.logon();
    report.wrongPassword = 'logged on!';
  } catch (error) {
    report.wrongPassword = `${error.faultString || ''} | ${error.detail || error.message}`;
  }

  console.log(JSON.stringify(report));
}

main().catch((error) => {
  console.error(`interop failed: ${error.stack || error}`);
  process.exit(1);
});
