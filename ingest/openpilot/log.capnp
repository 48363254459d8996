# The part of openpilot's cereal/log.capnp that fleetmine reads from rlog / qlog files.
#
# Cap'n Proto finds a field by its ordinal and place, never by its name, so a subset
# reads real logs only if every ordinal up to the last one used is declared with a type
# of the same size class as upstream's. Event's union holds every ordinal but 0
# (logMonoTime) and 67 (valid) up to 151: a union member's discriminant is its rank in
# ordinal order, so the members this file does not read are declared as Void (they take
# no space). Struct fields are declared up to the last one read, with upstream's sizes
# (a pointer as AnyPointer, an enum as UInt16). Ordinals from commaai/openpilot
# cereal/log.capnp and opendbc car.capnp (MIT); a newer member (> 151) is skipped.
@0xc2b0e6c7f1a4d93b;

struct CanData {
  address @0 :UInt32;
  busTime @1 :UInt16;
  dat @2 :Data;
  src @3 :UInt8;
}

struct InitData {
  kernelArgs @0 :List(Text);
  gctx @1 :Text;
  dongleId @2 :Text;
  deviceType @3 :UInt16;
  version @4 :Text;
  androidBuildInfo @5 :AnyPointer;
  androidSensors @6 :AnyPointer;
  chffrAndroidExtra @7 :AnyPointer;
  pandaInfo @8 :AnyPointer;
  dirty @9 :Bool;
  gitCommit @10 :Text;
  gitBranch @11 :Text;
  passive @12 :Bool;
  gitRemote @13 :Text;
  iosBuildInfo @14 :AnyPointer;
  kernelVersion @15 :Text;
  androidProperties @16 :AnyPointer;
  params @17 :AnyPointer;
  osVersion @18 :Text;
  commands @19 :AnyPointer;
  wallTimeNanos @20 :UInt64;
}

struct Clocks {
  bootTimeNanos @0 :UInt64;
  monotonicNanos @1 :UInt64;
  monotonicRawNanos @2 :UInt64;
  wallTimeNanos @3 :UInt64;
  modemUptimeMillis @4 :UInt64;
}

struct CarParams {
  brand @0 :Text;
  carFingerprint @1 :Text;
}

struct EncodeIndex {
  frameId @0 :UInt32;
  type @1 :UInt16;
  encodeId @2 :UInt32;
  segmentNum @3 :Int32;
  segmentId @4 :UInt32;
  segmentIdEncode @5 :UInt32;
  timestampSof @6 :UInt64;
  timestampEof @7 :UInt64;
  flags @8 :UInt32;
  len @9 :UInt32;
}

struct Event {
  logMonoTime @0 :UInt64;
  valid @67 :Bool = true;

  union {
    initData @1 :InitData;
    other2 @2 :Void;
    other3 @3 :Void;
    other4 @4 :Void;
    can @5 :List(CanData);
    other6 @6 :Void;
    other7 @7 :Void;
    other8 @8 :Void;
    other9 @9 :Void;
    other10 @10 :Void;
    other11 @11 :Void;
    other12 @12 :Void;
    other13 @13 :Void;
    other14 @14 :Void;
    roadEncodeIdx @15 :EncodeIndex;
    other16 @16 :Void;
    other17 @17 :Void;
    other18 @18 :Void;
    other19 @19 :Void;
    other20 @20 :Void;
    other21 @21 :Void;
    other22 @22 :Void;
    other23 @23 :Void;
    other24 @24 :Void;
    other25 @25 :Void;
    other26 @26 :Void;
    other27 @27 :Void;
    other28 @28 :Void;
    other29 @29 :Void;
    other30 @30 :Void;
    other31 @31 :Void;
    other32 @32 :Void;
    other33 @33 :Void;
    other34 @34 :Void;
    clocks @35 :Clocks;
    other36 @36 :Void;
    other37 @37 :Void;
    other38 @38 :Void;
    other39 @39 :Void;
    other40 @40 :Void;
    other41 @41 :Void;
    other42 @42 :Void;
    other43 @43 :Void;
    other44 @44 :Void;
    other45 @45 :Void;
    other46 @46 :Void;
    other47 @47 :Void;
    other48 @48 :Void;
    other49 @49 :Void;
    other50 @50 :Void;
    other51 @51 :Void;
    other52 @52 :Void;
    other53 @53 :Void;
    other54 @54 :Void;
    other55 @55 :Void;
    other56 @56 :Void;
    other57 @57 :Void;
    other58 @58 :Void;
    other59 @59 :Void;
    other60 @60 :Void;
    other61 @61 :Void;
    other62 @62 :Void;
    other63 @63 :Void;
    other64 @64 :Void;
    other65 @65 :Void;
    other66 @66 :Void;
    other68 @68 :Void;
    carParams @69 :CarParams;
    other70 @70 :Void;
    other71 @71 :Void;
    other72 @72 :Void;
    other73 @73 :Void;
    other74 @74 :Void;
    other75 @75 :Void;
    driverEncodeIdx @76 :EncodeIndex;
    wideRoadEncodeIdx @77 :EncodeIndex;
    other78 @78 :Void;
    other79 @79 :Void;
    other80 @80 :Void;
    other81 @81 :Void;
    other82 @82 :Void;
    other83 @83 :Void;
    other84 @84 :Void;
    other85 @85 :Void;
    other86 @86 :Void;
    other87 @87 :Void;
    other88 @88 :Void;
    other89 @89 :Void;
    qRoadEncodeIdx @90 :EncodeIndex;
    other91 @91 :Void;
    other92 @92 :Void;
    other93 @93 :Void;
    other94 @94 :Void;
    other95 @95 :Void;
    other96 @96 :Void;
    other97 @97 :Void;
    other98 @98 :Void;
    other99 @99 :Void;
    other100 @100 :Void;
    other101 @101 :Void;
    other102 @102 :Void;
    other103 @103 :Void;
    other104 @104 :Void;
    other105 @105 :Void;
    other106 @106 :Void;
    other107 @107 :Void;
    other108 @108 :Void;
    other109 @109 :Void;
    other110 @110 :Void;
    other111 @111 :Void;
    other112 @112 :Void;
    other113 @113 :Void;
    other114 @114 :Void;
    other115 @115 :Void;
    other116 @116 :Void;
    other117 @117 :Void;
    other118 @118 :Void;
    other119 @119 :Void;
    other120 @120 :Void;
    other121 @121 :Void;
    other122 @122 :Void;
    other123 @123 :Void;
    other124 @124 :Void;
    other125 @125 :Void;
    other126 @126 :Void;
    other127 @127 :Void;
    other128 @128 :Void;
    other129 @129 :Void;
    other130 @130 :Void;
    other131 @131 :Void;
    other132 @132 :Void;
    other133 @133 :Void;
    other134 @134 :Void;
    other135 @135 :Void;
    other136 @136 :Void;
    other137 @137 :Void;
    other138 @138 :Void;
    other139 @139 :Void;
    other140 @140 :Void;
    other141 @141 :Void;
    other142 @142 :Void;
    other143 @143 :Void;
    other144 @144 :Void;
    other145 @145 :Void;
    other146 @146 :Void;
    other147 @147 :Void;
    other148 @148 :Void;
    other149 @149 :Void;
    other150 @150 :Void;
    other151 @151 :Void;
  }
}
