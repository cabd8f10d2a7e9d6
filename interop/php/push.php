<?php
// PHP's SoapClient in WSDL mode, as an unmodified integration uses it: constructed with the
// WSDL URL of the endpoint it is given (here imsbridge), it fetches the WSDL, then calls the
// address the WSDL names. Prints one JSON line of what it saw.
//
// Environment: IMSBRIDGE_URL, LOGIN, PASSWORD (a caller with login/password), LOGON_LOGIN,
// LOGON_PASSWORD (a caller that logs on).

$url = getenv('IMSBRIDGE_URL');
$credential = getenv('LOGIN') . '/' . getenv('PASSWORD');
$report = [];

$client = new SoapClient("$url/nl/jsp/schemawsdl.jsp?schema=nms:rtEvent", [
    'trace' => true,
    'exceptions' => true,
    'cache_wsdl' => WSDL_CACHE_NONE,
]);
$event = ['any' => '<rtEvent type="order" email="php-soapclient@example.com"/>'];

$result = $client->PushEvent(['sessiontoken' => $credential, 'domEvent' => $event]);
$report['plId'] = (string) $result->plId;

try {
    $client->PushEvent(['sessiontoken' => getenv('LOGIN') . '/wrong', 'domEvent' => $event]);
    $report['wrongPassword'] = 'no fault';
} catch (SoapFault $fault) {
    $report['wrongPassword'] = $fault->getMessage();
    $report['faultcode'] = $fault->faultcode;
    $report['detail'] = isset($fault->detail) ? (is_string($fault->detail) ? $fault->detail : json_encode($fault->detail)) : null;
}

// Logon, PushEvent with the session it gave, Logoff; then the session is refused.
$session = new SoapClient("$url/nl/jsp/schemawsdl.jsp?schema=xtk:session", [
    'trace' => true,
    'exceptions' => true,
    'cache_wsdl' => WSDL_CACHE_NONE,
]);
$logon = $session->Logon([
    'sessiontoken' => '',
    'strLogin' => getenv('LOGON_LOGIN'),
    'strPassword' => getenv('LOGON_PASSWORD'),
    'elemParameters' => ['any' => '<parameters/>'],
]);
$token = $logon->pstrSessionToken;
$report['sessionToken'] = substr($token, 0, 5);
$report['securityToken'] = substr($logon->pstrSecurityToken, 0, 5);
$result = $client->PushEvent(['sessiontoken' => $token, 'domEvent' => $event]);
$report['sessionPlId'] = (string) $result->plId;
$session->Logoff(['sessiontoken' => $token]);
$report['loggedOff'] = true;
try {
    $client->PushEvent(['sessiontoken' => $token, 'domEvent' => $event]);
    $report['afterLogoff'] = 'no fault';
} catch (SoapFault $fault) {
    $report['afterLogoff'] = isset($fault->detail) ? (is_string($fault->detail) ? $fault->detail : json_encode($fault->detail)) : $fault->getMessage();
}

echo json_encode($report), "\n";
